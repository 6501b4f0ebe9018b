"""A worker's own record in the `agents` bucket: idle or busy, on what, and still alive.

The bucket forgets records a minute after their last write, so a worker that dies without a word
disappears from the pool by itself; a live one rewrites its record every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from nats.js.kv import KeyValue

from aether_contracts.agents import AgentRecord, AgentStatus, agent_key
from aether_contracts.state import utcnow

log = logging.getLogger("aether.executor.presence")

HEARTBEAT_EVERY_S = 3.0


class Presence:
    def __init__(self, agent_id: str, agent_type: str, backend: str, runtime_id: str | None = None) -> None:
        self.record = AgentRecord(
            id=agent_id,
            name=f"{agent_type} agent {agent_id}",
            role="expert",
            agent_type=agent_type,
            backend=backend,  # type: ignore[arg-type]
            runtime_id=runtime_id or str(os.getpid()),
            host=socket.gethostname(),
            status=AgentStatus.IDLE,
            idle_since=utcnow(),
        )
        self.kv: KeyValue | None = None
        self.current: dict[tuple[str, str], None] = {}
        self._beat: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def key(self) -> str:
        return agent_key(self.record.id)

    async def start(self, kv: KeyValue) -> None:
        self.kv = kv
        await self.write()
        self._beat = asyncio.create_task(self._beat_forever())

    async def busy(self, task_id: str, subtask_id: str) -> None:
        self.current[(task_id, subtask_id)] = None
        self.record.status = AgentStatus.BUSY
        self.record.current_task, self.record.current_subtask = task_id, subtask_id
        self.record.idle_since = None
        await self.write()

    async def idle(self, task_id: str, subtask_id: str, *, done: bool) -> None:
        self.current.pop((task_id, subtask_id), None)
        if done:
            self.record.subtasks_done += 1
        if self.record.status == AgentStatus.STOPPING:
            return
        if self.current:
            self.record.current_task, self.record.current_subtask = next(iter(self.current))
        else:
            self.record.status = AgentStatus.IDLE
            self.record.current_task = self.record.current_subtask = None
            self.record.idle_since = utcnow()
        await self.write()

    async def stopping(self, reason: str) -> None:
        self.record.status = AgentStatus.STOPPING
        self.record.error = reason
        await self.write()

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self.kv is not None:
            self.record.status = AgentStatus.STOPPED
            self.record.current_task = self.record.current_subtask = None
            with contextlib.suppress(Exception):
                await self.write()

    async def write(self) -> None:
        if self.kv is None:
            return
        async with self._lock:
            self.record.last_seen = utcnow()
            await self.kv.put(self.key, self.record.to_bytes())

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            try:
                await self.write()
            except Exception as exc:  # NATS away; the reconnect will come
                log.warning("agent heartbeat failed: %r", exc)
