"""The workspace's files in the JetStream Object Store bucket `workspace` (see
aether_contracts.workspace for the names), shared by every machine that reaches NATS.

Reads skip nats-py's per-read ordered consumer: an object's chunks are fetched one request each
with the stream's direct get, which is several times faster for the many small files a
workspace holds, and bounded in memory when streamed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import cast

from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from aether_contracts import topology
from aether_contracts.workspace import WorkspaceFile, file_object

from .files import ExtractedFile

IO_CONCURRENCY = 16


class ObjectMissing(KeyError):
    """The task state names an object the bucket does not have (deleted, or never stored)."""


class ObjectCorrupt(IOError):
    pass


@dataclass(frozen=True)
class Stored:
    name: str
    size: int
    sha256: str


def _hex(digest: str | None) -> str:
    if not digest:
        return ""
    raw = digest.split("=", 1)[1] if digest.upper().startswith("SHA-256=") else digest
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()


class ContentCache:
    """Recently read or written objects, least recently used out first, at most `max_bytes`.

    Safe because an object's name holds its digest (aether_contracts.workspace.file_object):
    a name never stands for other bytes. An agent running a chain of subtasks reads its own
    dependencies' files from here instead of from NATS.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, name: str) -> bytes | None:
        data = self._items.get(name)
        if data is not None:
            self._items.move_to_end(name)
        return data

    def put(self, name: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 8 or name in self._items:
            return
        self._items[name] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)


class WorkspaceStore:
    """Created before the connection exists; finds the bucket on first use. With `cache_bytes`,
    objects read or written are kept in memory (see ContentCache)."""

    def __init__(self, js: Callable[[], JetStreamContext | None], *, cache_bytes: int = 0) -> None:
        self._js = js
        self._bucket: ObjectStore | None = None
        self.cache = ContentCache(cache_bytes) if cache_bytes > 0 else None

    async def bucket(self) -> ObjectStore:
        if self._bucket is None:
            js = self._js()
            if js is None:
                raise RuntimeError("the workspace is used before the service connected to NATS")
            self._bucket = await js.object_store(topology.WORKSPACE_BUCKET)
        return self._bucket

    async def info(self, name: str) -> ObjectInfo | None:
        bucket = await self.bucket()
        try:
            return await bucket.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            return None

    async def put(self, name: str, data: bytes) -> Stored:
        """Store `data` under `name`; a name that already holds the same bytes is left alone."""
        digest = hashlib.sha256(data).hexdigest()
        existing = await self.info(name)
        if existing is None or _hex(existing.digest) != digest:
            await (await self.bucket()).put(name, data)
        if self.cache is not None:
            self.cache.put(name, data)
        return Stored(name, len(data), digest)

    async def store_files(
        self, task_id: str, written_by: str, files: Iterable[ExtractedFile]
    ) -> list[WorkspaceFile]:
        files = list(files)
        limit = asyncio.Semaphore(IO_CONCURRENCY)

        async def one(file: ExtractedFile) -> WorkspaceFile:
            name = file_object(task_id, written_by, file.sha256)
            async with limit:
                stored = await self.put(name, file.content)
            return WorkspaceFile(
                path=file.path, size=stored.size, sha256=stored.sha256, written_by=written_by, object=name
            )

        return list(await asyncio.gather(*(one(f) for f in files)))

    async def read(self, name: str) -> bytes:
        if self.cache is not None and (cached := self.cache.get(name)) is not None:
            return cached
        data = b"".join([chunk async for chunk in self.stream(name)])
        if self.cache is not None:
            self.cache.put(name, data)
        return data

    async def read_files(self, files: Iterable[WorkspaceFile]) -> dict[str, bytes]:
        """Object name -> content, read concurrently."""
        names = sorted({f.object for f in files})
        limit = asyncio.Semaphore(IO_CONCURRENCY)

        async def one(name: str) -> bytes:
            async with limit:
                return await self.read(name)

        return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))

    async def stream(self, name: str, info: ObjectInfo | None = None) -> AsyncIterator[bytes]:
        """The object's chunks in order; the digest is checked before the last one is yielded."""
        info = info or await self.info(name)
        if info is None:
            raise ObjectMissing(name)
        if not info.size:
            return
        bucket = await self.bucket()
        js = self._js()
        assert js is not None
        stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket._name)
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket._name, obj=info.nuid)
        digest = hashlib.sha256()
        seq, received, pending = 0, 0, None
        for _ in range(info.chunks or 0):
            try:
                msg = await js.get_msg(stream, seq=seq + 1, subject=subject, next=True, direct=True)
            except NotFoundError as exc:
                raise ObjectMissing(name) from exc
            seq = cast(int, msg.seq)  # a stored message always has its stream sequence
            data = msg.data or b""
            digest.update(data)
            received += len(data)
            if pending is not None:
                yield pending
            pending = data
        if received != info.size or digest.hexdigest() != _hex(info.digest):
            raise ObjectCorrupt(f"{name}: {received} of {info.size} bytes, or its digest differs")
        if pending is not None:
            yield pending
