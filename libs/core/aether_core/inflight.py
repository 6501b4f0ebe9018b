"""Work in flight, by task: what a cancellation or an agent's hand-back must stop at once.

`run` executes a coroutine in a task of its own, so that `cancel` can take it away without
cancelling the handler that awaits it (which still has to settle its message). The awaiting
handler then gets `Cancelled` with the reason, and decides: a cancelled task acks, a hand-back
nacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InFlight:
    def __init__(self) -> None:
        self._groups: dict[str, set[asyncio.Task]] = {}
        self._reasons: dict[asyncio.Task, str] = {}

    def __len__(self) -> int:
        return sum(len(tasks) for tasks in self._groups.values())

    async def run(self, group: str, work: Awaitable[T]) -> T:
        inner = asyncio.ensure_future(work)
        self._groups.setdefault(group, set()).add(inner)
        try:
            return await inner
        except asyncio.CancelledError:
            reason = self._reasons.pop(inner, None)
            outer = asyncio.current_task()
            if reason is not None and inner.cancelled() and not (outer and outer.cancelling()):
                raise Cancelled(reason) from None
            inner.cancel()
            raise
        finally:
            self._reasons.pop(inner, None)
            tasks = self._groups.get(group)
            if tasks is not None:
                tasks.discard(inner)
                if not tasks:
                    del self._groups[group]

    def cancel(self, group: str | None, reason: str) -> list[asyncio.Task]:
        """Cancel the work of one group (a task id), or of every group; returns what was cancelled."""
        groups = list(self._groups) if group is None else [group]
        cancelled = []
        for name in groups:
            for task in list(self._groups.get(name, ())):
                if not task.done():
                    self._reasons[task] = reason
                    task.cancel()
                    cancelled.append(task)
        return cancelled
