"""Every child of the devstack ends with it, however the devstack ends (issue 18).

Two guards, because either alone leaves something behind:

- Each child is started with a parent-death signal (Linux `PR_SET_PDEATHSIG`, SIGTERM): the
  kernel sends it the moment the devstack's process is gone, SIGKILL included, even if nothing
  else of ours is left to do it. It survives `exec`, so nats-server (a Go binary) gets it too.
- The reaper (`python -m aether_devstack.reaper <devstack pid>`), started first in a session of
  its own, reads a pipe from the devstack: each child it starts (pid, start time, stop timeout)
  and the agents' sweep. When the pipe closes without the devstack having said it stopped
  everything, it sends SIGTERM to each child's process group (a `docker build` under the image
  step included), SIGKILL to what is still there after the child's stop timeout, and runs the
  sweep, which removes agents a container-manager had no time to stop.

A process is known by its pid and its start time, so a pid used again by another process is
never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
"""Resolved before any fork: the child only calls it."""


def dying_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that gives the child `sig` when the process starting it ends (Linux)."""
    if _prctl is None:
        return None
    parent = os.getpid()
    prctl = _prctl
    number = int(sig)

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), number)

    return arm


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else int(fields[19])


def processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (process group, start time)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            found[int(name)] = (int(fields[2]), int(fields[19]))
    return found


class Lifeline:
    """The devstack's end of the pipe to its reaper."""

    def __init__(self, process: subprocess.Popen | None) -> None:
        self.process = process

    @classmethod
    def start(cls, env: dict[str, str]) -> Lifeline:
        """`env`: the reaper's environment (no secret: what it needs comes through the pipe)."""
        if sys.platform != "linux":
            return cls(None)
        process = subprocess.Popen(
            [sys.executable, "-m", "aether_devstack.reaper", str(os.getpid())],
            stdin=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C or a signal to our group must not reach it
        )
        return cls(process)

    def _send(self, message: dict) -> None:
        if self.process is None or self.process.stdin is None:
            return
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            self.process.stdin = None

    def child(self, name: str, pid: int, stop_timeout: float) -> None:
        started = start_time(pid)
        if started is not None:
            self._send({"child": name, "pid": pid, "start": started, "timeout": stop_timeout})

    def sweep(self, argv: list[str], env: dict[str, str]) -> None:
        """What to run once the children are gone (the environment holds secrets: it goes
        through the pipe, never through an argument list)."""
        self._send({"sweep": {"argv": argv, "env": env}})

    def done(self) -> None:
        """Every child has stopped: the reaper may leave."""
        self._send({"done": True})
        if self.process is not None:
            with contextlib.suppress(OSError):
                if self.process.stdin is not None:
                    self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)


def log(line: str) -> None:
    sys.stdout.write(f"{'reaper':<12} | {line}\n")
    sys.stdout.flush()


def members(pgid: int, started: int, table: dict[int, tuple[int, int]]) -> list[int]:
    """The processes still in the group a child led (itself included): none if its pid now
    belongs to another process (the group is someone else's then)."""
    leader = table.get(pgid)
    if leader is not None and leader[1] != started:
        return []
    return [pid for pid, (group, since) in table.items() if group == pgid and since >= started]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(children: dict[int, dict], poll: float = 0.2) -> list[str]:
    """SIGTERM to every child's group, SIGKILL after its stop timeout; the names killed."""
    table = processes()
    now = time.monotonic()
    waiting = {}
    for pid, child in children.items():
        if members(pid, child["start"], table):
            waiting[pid] = now + child["timeout"]
            signal_all(members(pid, child["start"], table), signal.SIGTERM)
    killed = []
    while waiting:
        time.sleep(poll)
        table = processes()
        for pid, deadline in list(waiting.items()):
            left = members(pid, children[pid]["start"], table)
            if not left:
                del waiting[pid]
            elif time.monotonic() > deadline:
                if children[pid]["name"] not in killed:
                    killed.append(children[pid]["name"])
                signal_all(left, signal.SIGKILL)
    return killed


def watch(devstack: int, pipe: IO[bytes]) -> int:
    children: dict[int, dict] = {}
    sweep: dict | None = None
    for line in pipe:
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if "child" in message:
                children[message["pid"]] = {
                    "name": message["child"], "start": message["start"], "timeout": message["timeout"]
                }
            elif "sweep" in message:
                sweep = message["sweep"]
            elif message.get("done"):
                return 0
    alive = processes()
    left = [c["name"] for pid, c in children.items() if members(pid, c["start"], alive)]
    log(
        f"the devstack (pid {devstack}) ended without stopping its children; stopping "
        + (", ".join(left) if left else "nothing (they had stopped)")
    )
    killed = stop(children)
    if killed:
        log(f"killed {', '.join(killed)} (still running after its stop timeout)")
    if sweep is not None:
        try:
            result = subprocess.run(
                sweep["argv"], env=sweep["env"], capture_output=True, text=True, timeout=120,
                stdin=subprocess.DEVNULL,
            )
            lines = (result.stdout + result.stderr).strip().splitlines()
            log(lines[-1] if lines else f"sweep exited with {result.returncode}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"the agents' sweep failed: {exc}")
    return 0


def main() -> int:
    # Only the devstack's end of the pipe ends this process: not a Ctrl-C, not a SIGTERM meant
    # for the devstack's group or name (`pkill -f aether_devstack`).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return watch(int(sys.argv[1]), sys.stdin.buffer)


if __name__ == "__main__":
    raise SystemExit(main())
