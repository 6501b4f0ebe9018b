"""Runs child processes in the foreground: prefixed output, restart on crash, clean shutdown.

The supervisor writes `<data dir>/devstack.json` (name, pid, restarts of each child) whenever a
child starts, so tests can find a service's process and kill it.

Each child leads a process group of its own and is signalled as a group, so what it started goes
with it; each dies with the supervisor's process too, and a reaper ends what is left when the
supervisor could not (`reaper.py`).

Children do not inherit the supervisor's environment: each starts from `child_environment` (what
any process needs, and the non-secret settings) plus what its `ChildSpec` adds, so an API key, the
LLM key or a NATS password reaches only the child it is meant for (issue 19).
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

from .reaper import Lifeline, dying_with_parent

COLORS = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96]

PASSED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "VIRTUAL_ENV", "CORS_ORIGINS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)
PASSED_PREFIXES = ("LC_", "PYTHON", "AETHER_", "OTEL_", "DOCKER_")
"""Settings (AETHER_*, OTEL_*), the interpreter's, and the Docker engine's address."""
WITHHELD = (
    "AETHER_API_KEYS", "AETHER_API_KEYS_FILE", "AETHER_API_KEY", "AETHER_NATS_URL",
    "AETHER_AGENT_NATS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL",
)
"""Secrets, or settings only some children may have: given by their ChildSpec, never inherited."""


def child_environment(environ: dict[str, str]) -> dict[str, str]:
    """What every child starts from: no secret, whatever the supervisor was started with."""
    env = {k: v for k, v in environ.items() if k in PASSED or k.startswith(PASSED_PREFIXES)}
    for name in WITHHELD:
        env.pop(name, None)
    return env


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: dict[str, str | None] = field(default_factory=dict)
    """Added to `child_environment`; `None` removes a variable."""
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
    def __init__(
        self,
        state_file: Path,
        *,
        quiet: bool = False,
        environ: dict[str, str] | None = None,
        lifeline: Lifeline | None = None,
    ) -> None:
        self.children: dict[str, Child] = {}
        self.once: list[Child] = []
        """Children run to their end (`run_once`), stopped first if they still run."""
        self.state_file = state_file
        self.quiet = quiet
        self.base_env = child_environment(dict(os.environ) if environ is None else environ)
        self.lifeline = lifeline or Lifeline(None)
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

    def environment(self, spec: ChildSpec) -> dict[str, str]:
        env = {**self.base_env, "PYTHONUNBUFFERED": "1"}
        for key, value in spec.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    async def run_once(self, spec: ChildSpec) -> int:
        """Run a child to its end in the foreground (its output prefixed); its exit code."""
        self._width = max(self._width, len(spec.name))
        child = Child(spec, 37)
        self.once.append(child)
        process = await self._exec(spec)
        child.process = process
        assert process.stdout is not None
        async for raw in process.stdout:
            self.log(spec.name, raw.decode(errors="replace").rstrip())
        return await process.wait()

    async def _exec(self, spec: ChildSpec) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            env=self.environment(spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            preexec_fn=dying_with_parent(),
        )
        self.lifeline.child(spec.name, process.pid, spec.stop_timeout)
        return process

    async def _spawn(self, child: Child) -> None:
        child.process = await self._exec(child.spec)
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

    def crashing(self, times: int) -> list[str]:
        """Children that exited `times` times in a row, each soon after its start."""
        return [c.spec.name for c in self.children.values() if c.restarts >= times]

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
        for child in self.once:
            await self._stop(child, child.spec.stop_timeout)
        names = [n for n in order if n in self.children] + [n for n in self.children if n not in order]
        for name in names:
            child = self.children[name]
            await self._stop(child, child.spec.stop_timeout)

    def kill_all(self) -> None:
        """SIGKILL to every child still running (a second Ctrl-C: do not wait)."""
        for child in [*self.once, *self.children.values()]:
            if child.process is not None and child.process.returncode is None:
                _signal_group(child.process, signal.SIGKILL)

    async def _stop(self, child: Child, timeout: float) -> None:
        child.stopping = True
        process = child.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            self.log(child.spec.name, f"did not stop in {timeout:.0f}s; killing", 91)
            _signal_group(process, signal.SIGKILL)
            await process.wait()
        if child.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.task, 2)


def _signal_group(process: asyncio.subprocess.Process, sig: int) -> None:
    """The child and what it started in its group (it leads one: `start_new_session`)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
