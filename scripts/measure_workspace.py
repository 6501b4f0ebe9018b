"""How large a task's workspace can get before something degrades, measured (`make bench-workspace`).

Runs the stack as `make up` does (simulator with no latency) and submits tasks whose experts
write `files=<n>` files of `file_bytes=<b>` bytes each (simulator directives), then reports per
size: the task's wall time, the task state's size in the KV bucket (every compare-and-set
rewrites it whole), the time of one state write, the repository's size, and the download time
of the bundle and the archive. Also measures the pieces alone: the parser, Object Store writes
and reads, and the in-memory repository build.

Prints a Markdown table; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats

from aether_contracts import topology
from aether_contracts.state import TaskState
from aether_core.files import ExtractedFile, FileLimits, extract_files
from aether_core.gitrepo import CommitSpec, memory_history
from aether_core.store import TaskStore
from aether_core.workspace_store import WorkspaceStore
from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

MB = 1_000_000


def plan(subtasks: int, files: int, size: int) -> str:
    sim = f"files={files} file_bytes={size}"
    items = [subtask("s1", "database-expert", sim=sim)]
    for n in range(2, subtasks + 1):
        # a fan-out after the first, joined by the last: parallel work on distinct paths
        deps = ["s1"] if n < subtasks else [f"s{k}" for k in range(2, subtasks)] or ["s1"]
        items.append(subtask(f"s{n}", "fullstack", deps, sim=f"{sim} path=part{n}/module.py"))
    return scripted(f"Workspace size {subtasks}x{files}x{size}", items)


async def end_to_end(stack: Stack, subtasks: int, files: int, size: int) -> dict:
    async with stack.client() as client:
        client.timeout = 300
        started = time.perf_counter()
        created = await stack.submit(client, plan(subtasks, files, size))
        task = await stack.wait_task(client, created["id"], timeout=1200)
        elapsed = time.perf_counter() - started
        listing = (await client.get(f"/api/orchestrate/task/{task['id']}/files")).json()
        t0 = time.perf_counter()
        bundle = await client.get(f"/api/orchestrate/task/{task['id']}/repository.bundle")
        t_bundle = time.perf_counter() - t0
        t0 = time.perf_counter()
        archive = await client.get(f"/api/orchestrate/task/{task['id']}/repository.tar.gz")
        t_archive = time.perf_counter() - t0
    nc = await nats.connect(stack.nats_url)
    try:
        kv = await nc.jetstream().key_value(topology.TASKS_BUCKET)
        entry = await kv.get(task["id"])
        state_bytes = len(entry.value)
        store = TaskStore(kv)
        writes = []
        for _ in range(5):
            t0 = time.perf_counter()
            await store.mutate(task["id"], lambda s: s.record("bench", "measuring one state write"))
            writes.append(time.perf_counter() - t0)
    finally:
        await nc.close()
    repo = listing.get("repository") or {}
    return {
        "status": task["status"],
        "subtasks": subtasks,
        "files": len(listing["files"]),
        "refused": len(listing["refused"]),
        "bytes": repo.get("bytes", 0),
        "task_s": elapsed,
        "state_kb": state_bytes / 1000,
        "cas_ms": statistics.median(writes) * 1000,
        "bundle_kb": len(bundle.content) / 1000,
        "bundle_s": t_bundle,
        "archive_kb": len(archive.content) / 1000,
        "archive_s": t_archive,
        "error": repo.get("error") or (task.get("error") if task["status"] != "completed" else None),
    }


def parser_speed(files: int, size: int) -> float:
    body = "x" * (size - 1)
    reply = "\n".join(f"```text path=f/{n}.txt\n{body}\n```" for n in range(files))
    t0 = time.perf_counter()
    extract_files(reply, FileLimits(max_file_bytes=10 * MB, max_files=100_000, max_total_bytes=10**10))
    return time.perf_counter() - t0


async def pieces(stack: Stack, files: int, size: int) -> dict:
    nc = await nats.connect(stack.nats_url)
    try:
        store = WorkspaceStore(lambda: nc.jetstream())
        content = [ExtractedFile(f"d{n % 20}/f{n}.txt", (f"{n}\n" * (size // 2 + 1))[:size].encode()) for n in range(files)]
        t0 = time.perf_counter()
        stored = await store.store_files(f"bench-{files}-{size}", "s", content)
        put_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await store.read_files(stored)
        read_s = time.perf_counter() - t0
    finally:
        await nc.close()
    t0 = time.perf_counter()
    history = memory_history()
    history.commit(CommitSpec("fullstack", "bench", {f.path: f.content for f in content}, datetime.now(UTC)))
    bundle = history.bundle()
    history.archive("bench", datetime.now(UTC))
    build_s = time.perf_counter() - t0
    return {"put_s": put_s, "read_s": read_s, "build_s": build_s, "bundle_kb": len(bundle) / 1000, "parse_s": parser_speed(files, size)}


def state_growth() -> list[tuple[int, float]]:
    """Bytes of task state per listed file (the KV value every write rewrites)."""
    from aether_contracts.state import Subtask
    from aether_contracts.workspace import WorkspaceFile, file_object

    rows = []
    for count in (0, 1000, 5000):
        state = TaskState(id="0" * 36, description="x")
        digest = hashlib.sha256(b"").hexdigest()
        files = [
            WorkspaceFile(path=f"src/module_{n // 50}/file_{n}.py", size=1234, sha256=digest, written_by="subtask-1", object=file_object("0" * 36, "subtask-1", digest))
            for n in range(count)
        ]
        state.subtasks.append(Subtask(id="subtask-1", description="d", agent_type="fullstack", files=files))
        raw = state.to_bytes()
        t0 = time.perf_counter()
        for _ in range(5):
            TaskState.from_bytes(raw).to_bytes()
        rows.append((count, len(raw) / 1000, (time.perf_counter() - t0) / 5 * 1000))
    return rows


async def main(args: argparse.Namespace) -> None:
    matrix = [tuple(int(x) for x in item.split("x")) for item in args.sizes.split(",")]
    stack = Stack().start()
    try:
        print("## End to end (subtasks x files per subtask x bytes per file)\n")
        print("| subtasks x files x bytes | status | files | refused | repo MB | task s | state KB | one state write ms | bundle KB | bundle download s | tar.gz KB | tar.gz download s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for subtasks, files, size in matrix:
            r = await end_to_end(stack, subtasks, files, size)
            print(
                f"| {subtasks}x{files}x{size} | {r['status']} | {r['files']} | {r['refused']} | {r['bytes'] / MB:.2f} | "
                f"{r['task_s']:.1f} | {r['state_kb']:.0f} | {r['cas_ms']:.1f} | {r['bundle_kb']:.0f} | {r['bundle_s']:.2f} | "
                f"{r['archive_kb']:.0f} | {r['archive_s']:.2f} |" + (f" {r['error']}" if r["error"] else ""),
                flush=True,
            )
        print("\n## Pieces (one subtask's files)\n")
        print("| files x bytes | parse s | Object Store put s | read s | repository build + bundle + tar.gz s | bundle KB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for files, size in ((200, 1000), (1000, 1000), (5000, 1000), (100, 80_000), (20, 1_000_000)):
            r = await pieces(stack, files, size)
            print(f"| {files}x{size} | {r['parse_s']:.3f} | {r['put_s']:.2f} | {r['read_s']:.2f} | {r['build_s']:.2f} | {r['bundle_kb']:.0f} |", flush=True)
    finally:
        stack.stop()
    print("\n## Task state size per listed file\n")
    print("| files listed | state KB | parse + serialise ms |")
    print("| --- | --- | --- |")
    for count, kb, ms in state_growth():
        print(f"| {count} | {kb:.0f} | {ms:.1f} |")
    print(json.dumps({"python": sys.version.split()[0]}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="4x1x200,4x50x1000,4x200x1000,4x200x10000,4x100x80000,16x200x1000,32x200x1000",
        help="comma-separated SUBTASKSxFILESxBYTES",
    )
    asyncio.run(main(parser.parse_args()))
