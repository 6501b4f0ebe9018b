"""PLACEHOLDER until the sandbox branch lands (the interface only; nothing runs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    cpu_s: float = 60.0
    memory_bytes: int = 1 << 30
    processes: int = 128
    file_bytes: int = 64 << 20
    output_bytes: int = 64 << 10


@dataclass
class CommandResult:
    exit_code: int | None
    output: str
    output_bytes: int
    timed_out: bool
    duration_s: float
    killed_by: str | None = None


class Sandbox(Protocol):
    name: str
    available: bool
    reason: str

    async def run(self, command: str, workdir: Path, limits: SandboxLimits) -> CommandResult: ...


class Unavailable:
    name = "unavailable"
    available = False

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def run(self, command: str, workdir: Path, limits: SandboxLimits) -> CommandResult:
        raise RuntimeError(f"no sandbox: {self.reason}")


def detect(*, kind: str = "auto", toolchain: Sequence[Path] = ()) -> Sandbox:
    return Unavailable("the sandbox module is a placeholder")
