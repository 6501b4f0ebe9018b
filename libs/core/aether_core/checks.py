"""A subtask's checks (the plan's `verify`: shell commands that must exit 0), run by Aether in the
sandbox: after an expert's loop in its worktree, and again by the synthesizer on the task's
assembled repository. Never without a sandbox: where none works, the checks did not run, and the
verification says so (it does not pass)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from aether_contracts.state import CheckRun, Verification

from .sandbox import CommandResult, Sandbox, SandboxLimits

TAIL_CHARS = 4_000
"""Of a check's output, the end kept in the state (what a failure shows)."""

OnCheck = Callable[[str, CommandResult | None, int], Awaitable[None]]
"""Told of each check as it ends: the command, its result (None: it could not run), milliseconds."""


def summary(result: CommandResult | None, reason: str = "") -> str:
    if result is None:
        return f"could not run: {reason}"
    if result.timed_out:
        return "timed out"
    if result.killed_by:
        return f"killed ({result.killed_by})"
    return f"exit code {result.exit_code}"


async def run_checks(
    sandbox: Sandbox,
    commands: Sequence[str],
    workdir: Path,
    limits: SandboxLimits,
    *,
    round_: int = 1,
    on_check: OnCheck | None = None,
) -> Verification:
    runs: list[CheckRun] = []
    if not sandbox.available:
        for command in commands:
            runs.append(CheckRun(command=command, passed=False, output_tail=f"not run: {sandbox.reason}", round=round_))
            if on_check is not None:
                await on_check(command, None, 0)
        return Verification(passed=False, checks=runs, rounds=round_, note=f"the checks could not run here: {sandbox.reason}")
    for command in commands:
        started = time.monotonic()
        result = await sandbox.run(command, workdir, replace(limits))
        took = int((time.monotonic() - started) * 1000)
        passed = result.exit_code == 0 and not result.timed_out
        tail = result.output[-TAIL_CHARS:]
        runs.append(CheckRun(
            command=command, passed=passed, exit_code=None if result.timed_out else result.exit_code,
            output_tail=f"{summary(result)}\n{tail}" if not passed else tail, duration_ms=took, round=round_,
        ))
        if on_check is not None:
            await on_check(command, result, took)
    return Verification(passed=all(r.passed for r in runs), checks=runs, rounds=round_)
