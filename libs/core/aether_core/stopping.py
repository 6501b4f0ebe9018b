"""A stop that hangs still ends: from its stop signal a service has `stop_timeout_s`
(`AETHER_STOP_TIMEOUT_S`) to finish what it holds and exit, then it exits anyway.

A graceful stop waits on things outside the process (handlers finishing, the drain of the NATS
connection, the shutdown hooks' last writes), and any of them can wait longer than whoever stops
the service is willing to. Kubernetes and the devstack send SIGKILL when their own timeout runs
out; a service whose only stop signal was its parent-death signal (the devstack killed with its
reaper, issue 18) has nobody left to do that, and it stayed. The guard is a thread, so it runs
whatever the event loop is blocked on; before it exits the process it logs where every thread
and task was, so a hang says what it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import sys
import tempfile
import threading
from typing import Any

from faststream import FastStream

log = logging.getLogger("aether")

EXIT_CODE = 70
"""The exit status of a stop that took too long (EX_SOFTWARE): not 0, whoever waits sees it."""


class StopGuard:
    def __init__(self, timeout_s: float, name: str) -> None:
        self.timeout_s = timeout_s
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """Called from the stop signal's handler (idempotent: a second signal changes nothing)."""
        if self._thread is not None:
            return
        with contextlib.suppress(RuntimeError):
            self.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._watch, name="stop-guard", daemon=True)
        self._thread.start()

    def disarm(self) -> None:
        """The stop finished: the process may exit in its own time."""
        self._stopped.set()

    def _watch(self) -> None:
        if self._stopped.wait(self.timeout_s):
            return
        log.error(
            "%s did not stop within %.0f s of its stop signal (AETHER_STOP_TIMEOUT_S): exiting "
            "now; where it was waiting:\n%s",
            self.name, self.timeout_s, self.where(),
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(EXIT_CODE)

    def where(self) -> str:
        """Every thread's stack and every pending task's (best effort: read from another thread)."""
        lines = []
        with contextlib.suppress(Exception), tempfile.TemporaryFile("w+") as dump:
            # faulthandler writes to a file descriptor, not to a Python stream.
            faulthandler.dump_traceback(dump, all_threads=True)
            dump.seek(0)
            lines.append(dump.read().rstrip())
        if self.loop is not None:
            with contextlib.suppress(Exception):
                for task in list(asyncio.all_tasks(self.loop)):
                    frames = task.get_stack(limit=4)
                    where = " <- ".join(
                        f"{f.f_code.co_name} ({os.path.basename(f.f_code.co_filename)}:{f.f_lineno})"
                        for f in reversed(frames)
                    )
                    lines.append(f"task {task.get_name()}: {where or task.get_coro()!r}")
        return "\n".join(lines)


class ServiceApp(FastStream):
    """A FastStream app whose stop is bounded (see the module). FastStream's signal handler calls
    `exit()`; so does everything else that stops the app."""

    def __init__(self, *args: Any, stop_timeout_s: float, name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_guard = StopGuard(stop_timeout_s, name)

    def exit(self) -> None:
        self.stop_guard.arm()
        super().exit()

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            self.stop_guard.disarm()
