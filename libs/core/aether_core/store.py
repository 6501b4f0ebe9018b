"""Task state in the `tasks` KV bucket, changed only by compare-and-set on the entry's revision."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from aether_contracts.state import InvalidTaskState, TaskState, TaskStatus, utcnow

from . import metrics, telemetry
from .control import stop_task
from .kv import create_key

T = TypeVar("T")


class Unchanged(Exception):
    """Raised by a mutation that decided the state needs no write (carries its answer)."""

    def __init__(self, value: object = None) -> None:
        super().__init__()
        self.value = value


class TaskNotFound(KeyError):
    pass


class TaskExists(Exception):
    pass


@dataclass
class Mutation(Generic[T]):
    state: TaskState
    revision: int
    value: T
    changed: bool
    conflicts: int


class TaskStore:
    """Created before the connection exists (handlers are registered first), bound once it does."""

    def __init__(self, kv: KeyValue | None = None, *, max_conflicts: int = 1000) -> None:
        self._kv = kv
        self.max_conflicts = max_conflicts

    def bind(self, kv: KeyValue) -> None:
        self._kv = kv

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("the task store is used before the service connected to NATS")
        return self._kv

    async def create(self, state: TaskState) -> int:
        state.check()
        try:
            return await create_key(self.kv, state.id, state.to_bytes())
        except KeyWrongLastSequenceError as exc:
            raise TaskExists(state.id) from exc

    async def get(self, task_id: str) -> tuple[TaskState, int] | None:
        try:
            entry = await self.kv.get(task_id)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return TaskState.from_bytes(entry.value), cast(int, entry.revision)  # a stored entry has one

    async def require(self, task_id: str) -> TaskState:
        found = await self.get(task_id)
        if found is None:
            raise TaskNotFound(task_id)
        return found[0]

    async def mutate(self, task_id: str, change: Callable[[TaskState], T]) -> Mutation[T]:
        """Apply `change` to the latest state and write it back if nobody wrote in between.

        `change` may run several times (once per conflict), always on a fresh copy, so it must
        only look at the state it is given. It raises `Unchanged` to skip the write.

        A change that leaves the state invalid (`TaskState.check`) is not written: the task is
        failed instead, with the reason, and `InvalidTaskState` is raised. Written, it would
        leave the task waiting for a subtask that can never run (issue 19, finding 6).
        """
        conflicts = 0
        while True:
            entry = await self._entry(task_id)
            assert entry.value is not None  # `_entry` raised TaskNotFound otherwise
            state = TaskState.from_bytes(entry.value)
            before = metrics.snapshot(state)
            was_terminal = state.status.terminal
            try:
                value = change(state)
            except Unchanged as unchanged:
                return Mutation(state, entry.revision, unchanged.value, False, conflicts)  # type: ignore[arg-type]
            invalid: InvalidTaskState | None = None
            try:
                state.check()
            except InvalidTaskState as broken:
                state = TaskState.from_bytes(entry.value)
                if state.status.terminal:
                    raise
                stop_task(state, TaskStatus.FAILED, f"a change would have made the task state invalid: {broken}")
                invalid = broken  # raised once the failure is written: `value` is never returned
            state.updated_at = utcnow()
            try:
                revision = await self.kv.update(task_id, state.to_bytes(), last=entry.revision)
            except KeyWrongLastSequenceError:
                conflicts += 1
                if conflicts >= self.max_conflicts:
                    raise
                # Spread the retries of writers that collided, or they collide again.
                await asyncio.sleep(random.uniform(0, 0.002 * min(conflicts, 10)))
                continue
            # Outcomes are counted here: the write of a transition succeeds exactly once. So is
            # the task's span of the round exported: the write that ended the round ends it.
            metrics.record_transition(before, state)
            if state.status.terminal and not was_terminal:
                telemetry.end_workflow(state)
            if invalid is not None:
                raise invalid
            return Mutation(state, revision, value, True, conflicts)

    async def _entry(self, task_id: str) -> KeyValue.Entry:
        try:
            entry = await self.kv.get(task_id)
        except KeyNotFoundError as exc:
            raise TaskNotFound(task_id) from exc
        if entry.value is None:
            raise TaskNotFound(task_id)
        return entry
