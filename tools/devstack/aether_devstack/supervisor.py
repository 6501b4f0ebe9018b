"""Runs child processes in the foreground: prefixed output, restart on crash, clean shutdown.

The supervisor writes `<data dir>/devstack.json` (name, pid, restarts of each child) whenever a
child starts, so tests can find a service's process and kill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

COLORS = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96]


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: dict[str, str | None] = field(default_factory=dict)
    """Added to the supervisor's environment; `None` removes a variable."""
    restart: bool = True
    stop_timeout: float = 15.0
    info: dict[str, object] = field(default_factory=dict)
    """Written to devstack.json with the child (e.g. its probe port)."""


@dataclass
class Child:
    spec: ChildSpec
    color: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    stopping: bool = False
    task: asyncio.Task | None = None


class Supervisor:
    def __init__(self, state_file: Path, *, quiet: bool = False) -> None:
        self.children: dict[str, Child] = {}
        self.state_file = state_file
        self.quiet = quiet
        self.shutting_down = asyncio.Event()
        self._width = 12

    def log(self, name: str, line: str, color: int = 37) -> None:
        if self.quiet:
            return
        prefix = f"\x1b[{color}m{name:<{self._width}}\x1b[0m |" if sys.stdout.isatty() else f"{name:<{self._width}} |"
        sys.stdout.write(f"{prefix} {line}\n")
        sys.stdout.flush()

    async def start(self, spec: ChildSpec) -> Child:
        child = Child(spec, COLORS[len(self.children) % len(COLORS)])
        self.children[spec.name] = child
        self._width = max(self._width, len(spec.name))
        await self._spawn(child)
        child.task = asyncio.create_task(self._watch(child))
        return child

    async def _spawn(self, child: Child) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key, value in child.spec.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        child.process = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        child.started_at = time.monotonic()
        self._write_state()

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.process is not None
            process = child.process
            assert process.stdout is not None
            async for raw in process.stdout:
                self.log(child.spec.name, raw.decode(errors="replace").rstrip(), child.color)
            code = await process.wait()
            if child.stopping or self.shutting_down.is_set():
                self.log(child.spec.name, f"stopped (exit {code})", child.color)
                return
            if not child.spec.restart:
                self.log(child.spec.name, f"exited with {code}", child.color)
                return
            ran = time.monotonic() - child.started_at
            if ran > 30:
                child.restarts = 0
            delay = min(10.0, 0.5 * 2**child.restarts)
            child.restarts += 1
            self.log(child.spec.name, f"exited with {code} after {ran:.1f}s; restarting in {delay:.1f}s", 91)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.shutting_down.wait(), timeout=delay)
            if self.shutting_down.is_set():
                return
            await self._spawn(child)

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "children": [
                {
                    "name": c.spec.name,
                    "pid": c.process.pid if c.process else None,
                    "restarts": c.restarts,
                    "argv": list(c.spec.argv),
                    **c.spec.info,
                }
                for c in self.children.values()
            ],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    async def stop_all(self, order: Sequence[str]) -> None:
        """Stop children in `order` (the rest after), each with SIGTERM, then SIGKILL."""
        self.shutting_down.set()
        names = [n for n in order if n in self.children] + [n for n in self.children if n not in order]
        for name in names:
            child = self.children[name]
            await self._stop(child, child.spec.stop_timeout)

    async def _stop(self, child: Child, timeout: float) -> None:
        child.stopping = True
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            self.log(child.spec.name, f"did not stop in {timeout:.0f}s; killing", 91)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if child.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.task, 2)
