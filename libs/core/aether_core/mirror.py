"""A live local copy of a KV bucket, kept current by a watch (restarted if it breaks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = logging.getLogger("aether.mirror")

Listener = Callable[[KeyValue.Entry], None]


class KVMirror:
    """`keep_values=False` keeps only revisions and feeds the listeners (for large buckets)."""

    def __init__(self, name: str, *, keep_values: bool = True) -> None:
        self.name = name
        self.keep_values = keep_values
        self.values: dict[str, bytes] = {}
        self.revisions: dict[str, int] = {}
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, kv: KeyValue) -> None:
        self._task = asyncio.create_task(self._follow(kv))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, kv: KeyValue) -> None:
        while True:
            watcher = None
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # caught up with what was there before the watch
                        self.ready.set()
                        continue
                    self.apply(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: watch interrupted (%r); restarting", self.name, exc)
                await asyncio.sleep(1)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()

    def apply(self, entry: KeyValue.Entry) -> None:
        revision = cast(int, entry.revision)  # a watched entry always has one (its stream sequence)
        if revision <= self.revisions.get(entry.key, 0):
            return
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self.values.pop(entry.key, None)
            self.revisions.pop(entry.key, None)
        else:
            if self.keep_values:
                self.values[entry.key] = entry.value
            self.revisions[entry.key] = revision
        for listener in list(self.listeners):
            try:
                listener(entry)
            except Exception:
                log.exception("%s: listener failed", self.name)
