"""Tasks in progress per tenant, counted atomically across every gateway replica.

Each tenant's admitted task ids live under one key of the `quotas` KV bucket, and a task is
admitted (submitted, or retried) only by a compare-and-set on that key that keeps the set within
`AETHER_MAX_ACTIVE_TASKS`: concurrent submits through any number of gateways cannot pass the
limit together, and a retry counts like a submit.

Nobody has to remove a finished task: admitting prunes the ids whose task has ended (the index
says so first, the task's own state confirms it, so a task retried through another gateway is
never dropped on a stale view). An id whose task never came to exist (its gateway died between
admitting it and writing it) is dropped after `GRACE_S`. A retry admits its task before it
writes the task's next round, so the entry names that round: an ended task whose state is still
at an earlier round is a retry about to start, and stays counted (for `GRACE_S` at most, since a
refused retry never writes its round).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from aether_core.kv import create_key
from aether_core.store import TaskStore

from .index import TaskIndex

GRACE_S = 60.0
MAX_CONFLICTS = 500


def tenant_key(tenant: str | None) -> str:
    # KV keys take a small alphabet; tenant names are anything: a digest stands for them.
    return "active." + ("anonymous" if tenant is None else hashlib.sha256(tenant.encode()).hexdigest()[:40])


class ActiveTasks:
    def __init__(self, index: TaskIndex, store: TaskStore, limit: int) -> None:
        self.index = index
        self.store = store
        self.limit = limit
        self._kv: KeyValue | None = None

    def bind(self, kv: KeyValue) -> None:
        self._kv = kv

    async def admit(self, tenant: str | None, task_id: str, round: int = 1) -> int | None:
        """Count `task_id` (about to run its `round`) among the tenant's tasks in progress; None
        when admitted (or already counted), else how many are in progress (the limit is reached)."""
        assert self._kv is not None, "the quota is used before the gateway connected to NATS"
        key = tenant_key(tenant)
        for conflicts in range(MAX_CONFLICTS):
            try:
                entry = await self._kv.get(key)
                revision, admitted = entry.revision, json.loads(entry.value or b"{}")
            except KeyNotFoundError:
                revision, admitted = None, {}
            if admitted.get(task_id, {}).get("round", 0) >= round:
                return None
            admitted = await self._prune(admitted)
            if len(admitted) >= self.limit:
                return len(admitted)
            admitted[task_id] = {"at": time.time(), "round": round}
            value = json.dumps(admitted, separators=(",", ":")).encode()
            try:
                if revision is None:
                    await create_key(self._kv, key, value)
                else:
                    await self._kv.update(key, value, last=revision)
                return None
            except KeyWrongLastSequenceError:
                # Another submit of this tenant won the write: read again and decide again.
                await asyncio.sleep(random.uniform(0, 0.002 * min(conflicts + 1, 10)))
        raise RuntimeError(f"the active-task count of a tenant kept changing ({MAX_CONFLICTS} conflicts)")

    async def release(self, tenant: str | None, task_id: str, round: int) -> None:
        """Forget an admission whose retry was refused (its round never started)."""
        assert self._kv is not None
        key = tenant_key(tenant)
        for _ in range(MAX_CONFLICTS):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                return
            admitted = json.loads(entry.value or b"{}")
            if admitted.get(task_id, {}).get("round") != round:
                return
            del admitted[task_id]
            try:
                await self._kv.update(key, json.dumps(admitted, separators=(",", ":")).encode(), last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.002))

    async def _prune(self, admitted: dict[str, dict]) -> dict[str, dict]:
        kept: dict[str, dict] = {}
        now = time.time()
        for task_id, entry in admitted.items():
            status = self.index.status_of(task_id)
            if status is not None and not status.terminal:
                kept[task_id] = entry
                continue
            # Ended as far as this gateway knows, or unknown to it: ask the task's state.
            found = await self.store.get(task_id)
            recent = now - entry["at"] < GRACE_S
            if found is None:
                if recent:
                    kept[task_id] = entry  # admitted a moment ago; its state is being written
            elif not found[0].status.terminal or (found[0].round < entry["round"] and recent):
                kept[task_id] = entry
        return kept
