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
            backend=backend,
            runtime_id=runtime_id or str(os.getpid()),
            host=socket.gethostname(),
            status=AgentStatus.IDLE,
            idle_since=utcnow(),
        )
        self.kv: KeyValue | None = None
        self.current: dict[tuple[str, str], None] = {}
        self._beat: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def key(self) -> str:
        return agent_key(self.record.id)

    async def start(self, kv: KeyValue) -> None:
        self.kv = kv
        await self.write()
        self._beat = asyncio.create_task(self._beat_forever())
        self._writer = asyncio.create_task(self._write_changes())

    def busy(self, task_id: str, subtask_id: str) -> None:
        """Noted at once, written in the background: a subtask must not wait for the pool's view."""
        self.current[(task_id, subtask_id)] = None
        self.record.status = AgentStatus.BUSY
        self.record.current_task, self.record.current_subtask = task_id, subtask_id
        self.record.idle_since = None
        self._changed.set()

    def idle(self, task_id: str, subtask_id: str, *, done: bool) -> None:
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
        self._changed.set()

    async def stopping(self, reason: str) -> None:
        self.record.status = AgentStatus.STOPPING
        self.record.error = reason
        await self.write()

    async def stop(self) -> None:
        for task in (self._beat, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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

    async def _write_changes(self) -> None:
        """Coalesce bursts of busy/idle into one write each time the previous one is done."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.write()
            except Exception as exc:
                log.warning("agent record write failed: %r", exc)
                self._changed.set()
                await asyncio.sleep(1)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            try:
                await self.write()
            except Exception as exc:  # NATS away; the reconnect will come
                log.warning("agent heartbeat failed: %r", exc)
