"""What starting a sandboxed command costs: `true` under the sandbox vs a plain `sh -c true`.

    .venv/bin/python tools/bench_sandbox.py [--runs 50] [--files 0,1000,10000]

Both are started the way the agent starts them (asyncio subprocesses, output read to the end).
As root every sandboxed run also lends the worktree to its uid and takes it back: by an idmapped
mount (constant cost) or, where the kernel or the filesystem cannot, by chown (a walk over the
tree, a chown per entry each way); `--files` times both for worktrees of those many files.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aether_core.sandbox import SandboxLimits, detect


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1e3:6.1f} ms   p90 {p90 * 1e3:6.1f} ms"


async def plain(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("sh", "-c", "true", stdout=asyncio.subprocess.PIPE)
        await proc.communicate()
        times.append(time.perf_counter() - start)
    return times


async def sandboxed(sandbox, workdir: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = await sandbox.run("true", workdir, SandboxLimits())
        assert result.exit_code == 0, result
        times.append(time.perf_counter() - start)
    return times


def tree(root: Path, files: int) -> Path:
    for index in range(files):
        folder = root / f"d{index // 100}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{index}.py").write_text("x = 1\n")
    return root


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--files", default="0,1000,10000", help="worktree sizes to time, comma-separated")
    args = parser.parse_args()
    toolchain = [Path(sys.prefix), Path(sys.base_prefix)]
    ways = ["idmap", "chown"] if os.geteuid() == 0 else ["auto"]
    sandboxes = {way: detect(toolchain=toolchain, lend=way) for way in ways}
    for sandbox in sandboxes.values():
        if not sandbox.available:
            sys.exit(f"no sandbox here: {sandbox.reason}")
    print(f"{args.runs} runs each, as {'root: a pool uid, the worktree lent' if ways != ['auto'] else 'the user'}")
    await plain(5)  # warm up: page cache, the first fork of a fresh interpreter
    print(f"  plain sh -c true                  {summary(await plain(args.runs))}")
    for files in (int(n) for n in args.files.split(",")):
        with tempfile.TemporaryDirectory() as workdir:
            tree(Path(workdir), files)
            for way, sandbox in sandboxes.items():
                times = await sandboxed(sandbox, Path(workdir), args.runs)
                print(f"  sandboxed, {files:6d} files, {way:5s}  {summary(times)}")


if __name__ == "__main__":
    asyncio.run(main())
