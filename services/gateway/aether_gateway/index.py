"""An in-memory index of task summaries, kept current by a watch on the `tasks` KV bucket.

Listing 10,000 tasks then costs a sort of what is in memory, not 10,000 KV reads, and every
gateway replica keeps its own copy. The watch is also where live updates come from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from aether_contracts.state import TaskState, TaskStatus
from aether_core.mirror import KVMirror

from .schemas import TaskSummary, task_summary

log = logging.getLogger("aether.gateway.index")

Listener = Callable[[str, TaskState | None, int], None]
UNKNOWN_TENANT = "\0unknown"


class TaskIndex:
    def __init__(self) -> None:
        self._summaries: dict[str, TaskSummary] = {}
        self._tenants: dict[str, str | None] = {}
        self._order: list[str] | None = None
        """Task ids, newest first; only a new or removed task invalidates it (order never changes)."""
        self.mirror = KVMirror("tasks", keep_values=False)
        self.mirror.listeners.append(self._apply)
        self.ready = self.mirror.ready
        self.listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self._summaries)

    def upsert(self, state: TaskState, revision: int) -> None:
        current = self._summaries.get(state.id)
        if current is not None and current.revision >= revision:
            return
        if current is None:
            self._order = None
        self._summaries[state.id] = task_summary(state, revision)
        self._tenants[state.id] = state.tenant

    def masters_at_work(self) -> dict[str, int]:
        """How many tasks each master is planning or synthesizing right now."""
        busy: dict[str, int] = {}
        for summary in self._summaries.values():
            if summary.status in (TaskStatus.PLANNING, TaskStatus.SYNTHESIZING):
                busy[summary.master_deployment_id] = busy.get(summary.master_deployment_id, 0) + 1
        return busy

    def remove(self, task_id: str) -> None:
        self._tenants.pop(task_id, None)
        if self._summaries.pop(task_id, None) is not None:
            self._order = None

    def tenant_of(self, task_id: str) -> str | None:
        """The tenant of a task this gateway knows; a task it does not know yet reads as nobody's
        (`visible` then holds for an anonymous caller only)."""
        return self._tenants.get(task_id, UNKNOWN_TENANT)

    def status_of(self, task_id: str) -> TaskStatus | None:
        summary = self._summaries.get(task_id)
        return summary.status if summary is not None else None

    def page(
        self,
        *,
        limit: int,
        offset: int,
        status: TaskStatus | None = None,
        tenant: str | None = None,
    ) -> tuple[list[TaskSummary], int]:
        if self._order is None:
            self._order = [
                s.id
                for s in sorted(
                    self._summaries.values(), key=lambda s: (s.created_at, s.id), reverse=True
                )
            ]
        summaries, tenants = self._summaries, self._tenants
        ids = self._order
        if tenant is not None:
            ids = [i for i in ids if tenants.get(i) == tenant]
        if status is not None:
            ids = [i for i in ids if summaries[i].status == status]
        return [summaries[i] for i in ids[offset : offset + limit]], len(ids)

    def count_by_status(self) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        for summary in self._summaries.values():
            counts[summary.status] = counts.get(summary.status, 0) + 1
        return counts

    async def start(self, kv: KeyValue) -> None:
        await self.mirror.start(kv)

    async def stop(self) -> None:
        await self.mirror.stop()

    def _apply(self, entry: KeyValue.Entry) -> None:
        revision = cast(int, entry.revision)  # the mirror's: a watched entry always has one
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self.remove(entry.key)
            state = None
        else:
            try:
                state = TaskState.from_bytes(entry.value)
            except ValueError:
                log.error("task %s has unreadable state at revision %s", entry.key, entry.revision)
                return
            self.upsert(state, revision)
        for listener in list(self.listeners):
            try:
                listener(entry.key, state, revision)
            except Exception:
                log.exception("task listener failed")
