"""The workspace Object Store against a real nats-server: content-addressed puts, chunked reads
with digest checks, a missing object, and the bucket created by `ensure_topology`."""

import hashlib
import os

import nats
import pytest

from aether_contracts import topology
from aether_contracts.workspace import file_object
from aether_core import declare
from aether_core.files import ExtractedFile
from aether_core.workspace_store import ObjectCorrupt, ObjectMissing, WorkspaceStore


async def test_files_are_stored_by_task_subtask_and_digest_and_read_back(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await declare.ensure_topology(js)
        await declare.ensure_topology(js)  # idempotent
        store = WorkspaceStore(lambda: js)
        big = os.urandom(300_000)  # three chunks
        files = [ExtractedFile("a.py", b"x = 1\n"), ExtractedFile("data/big.bin", big), ExtractedFile("empty", b"")]
        stored = await store.store_files("task-ws-1", "sub/1", files)
        assert [f.object for f in stored] == [
            file_object("task-ws-1", "sub/1", hashlib.sha256(f.content).hexdigest()) for f in files
        ]
        assert stored[0].object.startswith("tasks/task-ws-1/subtasks/sub%2F1/")
        assert [(f.path, f.size, f.written_by) for f in stored] == [("a.py", 6, "sub/1"), ("data/big.bin", 300_000, "sub/1"), ("empty", 0, "sub/1")]

        contents = await store.read_files(stored)
        assert contents[stored[1].object] == big and contents[stored[0].object] == b"x = 1\n"
        assert contents[stored[2].object] == b""
        chunks = [c async for c in store.stream(stored[1].object)]
        assert len(chunks) == 3 and b"".join(chunks) == big

        info = await store.info(stored[1].object)
        again = await store.store_files("task-ws-1", "sub/1", files[1:2])
        assert again[0].object == stored[1].object
        assert (await store.info(stored[1].object)).nuid == info.nuid, "same content is not rewritten"

        with pytest.raises(ObjectMissing):
            await store.read("tasks/none/subtasks/x/" + "0" * 64)
    finally:
        await nc.close()


async def test_a_corrupted_object_is_detected_not_served(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await declare.ensure_topology(js)
        store = WorkspaceStore(lambda: js)
        [stored] = await store.store_files("task-ws-2", "s", [ExtractedFile("a.txt", b"original")])
        info = await store.info(stored.object)
        # Rewrite the chunk under the object's nuid, behind the Object Store's back.
        await js.publish(f"$O.{topology.WORKSPACE_BUCKET}.C.{info.nuid}", b"tampered")
        stream = f"OBJ_{topology.WORKSPACE_BUCKET}"
        first = await js.get_msg(stream, subject=f"$O.{topology.WORKSPACE_BUCKET}.C.{info.nuid}", seq=1, next=True)
        await js.delete_msg(stream, first.seq)
        with pytest.raises(ObjectCorrupt):
            await store.read(stored.object)
    finally:
        await nc.close()
