"""`make bench`: Aether measured against the lower bound and against the alternatives, side by
side in one run. Prints a table and writes JSON (artifacts/bench.json).

1. makespan / critical path on a fixed seed of random DAGs (8-32 subtasks, log-normal latencies),
   for Aether, the Phase 1 level-by-level loop and LangGraph, same simulator, same latencies;
2. overhead per subtask with a zero-latency simulator: a dependency's completion to its
   dependent's LLM request;
3. throughput with 1, 2 and 4 executor replicas, zero latency, and the CPU each service used;
4. memory for 10,000 finished tasks, and the time of listing them;
5. experts that act, zero latency: from a tool's result to the expert's next LLM request, and the
   cost of starting a sandboxed command (`true`) against a plain one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import nats

from aether_devstack.harness import ROOT, TERMINAL, Stack

from .baselines import Llm, langgraph, phase1
from .dags import Dag, Node, workload

SEED = 20261124
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p95": pct(values, 0.95), "n": len(values)}


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def submit(client: httpx.AsyncClient, description: str) -> str:
    while True:
        response = await client.post("/api/orchestrate/task", json={"description": description})
        if response.status_code == 202:
            return response.json()["id"]
        if response.status_code != 429:
            raise RuntimeError(f"submit failed: {response.status_code} {response.text}")
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def wait_all(client: httpx.AsyncClient, ids: list[str], timeout: float = 900) -> list[dict]:
    """Every task of `ids` once it has finished, from the task list (a page of 500 per request,
    ten times a second): polling each task would load the gateway more than the work does."""
    wanted, found = set(ids), {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        offset, seen = 0, 0
        while seen < len(wanted):  # newest first: older pages hold none of them
            page = (await client.get("/api/orchestrate/tasks", params={"limit": 500, "offset": offset})).json()
            for summary in page:
                if summary["id"] in wanted:
                    seen += 1
                    if summary["status"] in TERMINAL:
                        found[summary["id"]] = summary
            offset += len(page)
            if len(page) < 500:
                break
        if len(found) == len(wanted):
            return [found[i] for i in ids]
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{len(wanted) - len(found)} of {len(wanted)} tasks unfinished")


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stop(stack: Stack) -> None:
    stack.stop()
    shutil.rmtree(stack.data_dir, ignore_errors=True)  # 10,000 tasks leave some 100 MB


def stack_env(**extra: str) -> dict[str, str]:
    # Agents without a pool limit, as the baselines have none: this measures orchestration.
    return {
        "AETHER_AGENT_BACKEND": "none",
        "AETHER_WORKER_CONCURRENCY": "64",
        "AETHER_MAX_ACTIVE_TASKS": "1000000",
        "AETHER_LOG_LEVEL": "WARNING",
        **extra,
    }


# -- 1. makespan / critical path ------------------------------------------------------------------
async def makespan(stack: Stack, dags: list[Dag]) -> dict:
    llm = Llm(f"{stack.sim_url}/v1")
    rows = []
    async with stack.client() as client:

        async def aether(dag: Dag) -> float:
            task = await stack.wait_task(client, await submit(client, dag.description()), timeout=600)
            assert task["status"] == "completed", task["logs"][-5:]
            return (when(task["completed_at"]) - when(task["created_at"])).total_seconds()

        for dag in dags:
            a, p, g = await asyncio.gather(aether(dag), phase1(llm, dag), langgraph(llm, dag))
            cp = dag.critical_path_ms() / 1000
            rows.append({"dag": dag.name, "subtasks": len(dag.nodes), "critical_path_s": cp,
                         "level_by_level_bound_s": dag.level_by_level_ms() / 1000,
                         "aether_s": a, "phase1_s": p, "langgraph_s": g})
    await llm.close()
    result = {"rows": rows}
    for system in ("aether", "phase1", "langgraph"):
        ratios = [r[f"{system}_s"] / r["critical_path_s"] for r in rows]
        result[system] = {"ratio": summary(ratios), "makespan_s": summary([r[f"{system}_s"] for r in rows])}
    result["level_by_level_bound"] = {"ratio": summary([r["level_by_level_bound_s"] / r["critical_path_s"] for r in rows])}
    return result


# -- 2. overhead per subtask --------------------------------------------------------------------
async def overhead(stack: Stack, chains: int, length: int) -> dict:
    gaps: list[float] = []
    async with stack.client() as client:
        for c in range(chains):
            nodes = tuple(Node(f"s{i}", "fullstack", (f"s{i - 1}",) if i else (), 0) for i in range(length))
            dag = Dag(f"chain-{c}", nodes, 0, 0)
            task = await stack.wait_task(client, await submit(client, dag.description()), timeout=600)
            requests = await stack.sim_requests(client, task_id=task["id"], role="expert")
            asked = {r["subtask_id"]: r["at"] for r in requests}
            by_id = {s["id"]: s for s in task["subtasks"]}
            for i in range(1, length):
                done = when(by_id[f"s{i - 1}"]["completed_at"]).timestamp()
                gaps.append((asked[f"s{i}"] - done) * 1000)
    return {"ms": summary(gaps)}


# -- 5. experts that act -------------------------------------------------------------------------
async def tool_steps(stack: Stack, tasks: int) -> dict:
    """Each expert request that follows tool calls, against the end of the last of them."""
    gaps: list[float] = []
    async with stack.client() as client:
        for n in range(tasks):
            plan = {"analysis": "bench", "subtasks": [{"id": "t", "description": f"Acting {n}", "agent_type": "python-backend",
                                                       "depends_on": [], "verify": ["python3 -m pytest -q"]}]}
            task = await stack.wait_task(client, await submit(client, f"Tools {n}\nSIM-PLAN: {json.dumps(plan)}"), timeout=300)
            assert task["status"] == "completed", task["logs"][-5:]
            steps = (await client.get(f"/api/orchestrate/task/{task['id']}/subtasks/t/steps")).json()
            asked = sorted(r["at"] for r in await stack.sim_requests(client, task_id=task["id"], role="expert"))
            ended = [when(s["at"]).timestamp() for s in steps if s["kind"] == "tool"]
            for before, request in itertools.pairwise(asked):
                batch = [t for t in ended if before < t < request]
                if batch:
                    gaps.append((request - max(batch)) * 1000)
    return {"ms": summary(gaps)}


def sandbox_start(runs: int) -> dict:
    """A sandboxed `true` against a plain `sh -c true`, as an agent starts its commands."""
    import subprocess
    import tempfile

    from aether_core.sandbox import SandboxLimits, detect

    sandbox = detect(toolchain=sorted({Path(sys.prefix), Path(sys.base_prefix)}))
    if not sandbox.available:
        return {"available": False, "reason": sandbox.reason}

    async def sandboxed(workdir: Path) -> list[float]:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await sandbox.run("true", workdir, SandboxLimits(timeout_s=10))
            times.append((time.perf_counter() - started) * 1000)
        return times

    plain = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["sh", "-c", "true"], check=True)
        plain.append((time.perf_counter() - started) * 1000)
    with tempfile.TemporaryDirectory() as workdir:
        boxed = asyncio.run(sandboxed(Path(workdir)))
    return {"available": True, "name": sandbox.name, "sandboxed_ms": summary(boxed), "plain_ms": summary(plain)}


# -- 3. throughput ----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def eight_subtasks(n: int) -> str:
    shape = [[], ["s0"], ["s0"], ["s0"], ["s1", "s3"], ["s1"], ["s2", "s4"], ["s5", "s6"]]
    nodes = tuple(Node(f"s{i}", "fullstack", tuple(deps), 0) for i, deps in enumerate(shape))
    return Dag(f"throughput-{n}", nodes, 0, 0).description()


async def throughput(replicas: int, tasks: int, *, worktrees: bool = True) -> dict:
    """`worktrees=False`: agents without git worktrees (AETHER_WORKSPACE_DIR=off), which is
    what the orchestration itself costs; files still go through the Object Store."""
    env = stack_env() if worktrees else stack_env(AETHER_WORKSPACE_DIR="off")
    stack = Stack(env=env, scale=f"executor={replicas}", prefix="aether-bench-").start()
    try:
        async with stack.client() as client:
            warm = [await submit(client, eight_subtasks(-1))]
            await stack.wait_task(client, warm[0], timeout=600)
            pids = {c["name"]: c["pid"] for c in stack.children().values()}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            ids = await asyncio.gather(*(submit(client, eight_subtasks(n)) for n in range(tasks)))
            done = await wait_all(client, ids)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        assert all(t["status"] == "completed" for t in done), [t["error"] for t in done if t["error"]][:3]
        # The stack's own clock: the first task created to the last one completed.
        wall = (max(when(t["completed_at"]) for t in done) - min(when(t["created_at"]) for t in done)).total_seconds()
        return {
            "replicas": replicas,
            "worktrees": worktrees,
            "tasks": tasks,
            "seconds": wall,
            "tasks_per_s": tasks / wall,
            "subtasks_per_s": tasks * 8 / wall,
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        }
    finally:
        stop(stack)


# -- 4. memory and listing at 10,000 tasks ---------------------------------------------------------
async def memory(count: int) -> dict:
    stack = Stack(env=stack_env(), prefix="aether-bench-").start()
    try:
        one = Dag("tiny", (Node("s0", "fullstack", (), 0),), 0, 0).description()
        started = time.perf_counter()
        # Waves of 500 submits on two cores: a reply can take longer than the default 30 s.
        async with stack.client(timeout=180) as client:
            semaphore = asyncio.Semaphore(200)

            async def submit_one() -> str:
                async with semaphore:
                    return await submit(client, one)

            for start in range(0, count, 500):  # in waves, as a steady stream of users would
                ids = await asyncio.gather(*(submit_one() for _ in range(min(500, count - start))))
                await wait_all(client, ids)
            filled = time.perf_counter() - started
            timings, deep = [], []
            for _ in range(100):
                t = time.perf_counter()
                response = await client.get("/api/orchestrate/tasks", params={"limit": 50})
                timings.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await client.get("/api/orchestrate/tasks", params={"limit": 50, "offset": count - 50})
                deep.append((time.perf_counter() - t) * 1000)
            total = int(response.headers["x-total-count"])
        nc = await nats.connect(stack.nats_url)
        info = await nc.jetstream().stream_info("KV_tasks")
        await nc.close()
        return {
            "tasks": total,
            "fill_seconds": filled,
            "kv_tasks_mb": info.state.bytes / 2**20,
            "kv_bytes_per_task": info.state.bytes / max(1, total),
            "rss_mb": {c["name"]: round(rss_mb(c["pid"]), 1) for c in stack.children().values()},
            "list_first_page_ms": summary(timings),
            "list_last_page_ms": summary(deep),
        }
    finally:
        stop(stack)


def table(results: dict) -> str:
    failed = [f"{name}: {value['error']}" for name, value in results.items() if isinstance(value, dict) and "error" in value]
    failed += [f"throughput: {t['error']}" for t in results.get("throughput", []) if "error" in t]
    results = {
        **{k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)},
        "throughput": [t for t in results.get("throughput", []) if "error" not in t],
    }
    return "\n".join([_table(results), *(f"FAILED {line}" for line in failed)])


def _table(results: dict) -> str:
    lines = [f"Aether benchmark — {results['machine']}"]
    if m := results.get("makespan"):
        lines += ["", "| Makespan / critical path | median | p95 | median makespan |", "| --- | --- | --- | --- |"]
        for name, label in (("aether", "Aether"), ("phase1", "Phase 1 loop (asyncio.gather per level)"), ("langgraph", "LangGraph")):
            r = m[name]
            lines.append(f"| {label} | {r['ratio']['median']:.3f} | {r['ratio']['p95']:.3f} | {r['makespan_s']['median']:.2f} s |")
        b = m["level_by_level_bound"]["ratio"]
        lines.append(f"| (level-by-level lower bound) | {b['median']:.3f} | {b['p95']:.3f} | |")
    if o := results.get("overhead"):
        o = o["ms"]
        lines += ["", f"Overhead per subtask (dependency done -> dependent's LLM request): median {o['median']:.2f} ms, p95 {o['p95']:.2f} ms (n={o['n']})"]
    if results.get("throughput"):
        lines += ["", "| Executor replicas | tasks/s | subtasks/s | CPU s per service |", "| --- | --- | --- | --- |"]
        for t in results["throughput"]:
            cpu = ", ".join(f"{k} {v}" for k, v in sorted(t["cpu_s"].items()) if v >= 0.05)
            label = f"{t['replicas']}" + ("" if t.get("worktrees", True) else " (agents without git worktrees)")
            lines.append(f"| {label} | {t['tasks_per_s']:.1f} | {t['subtasks_per_s']:.0f} | {cpu} |")
    if mem := results.get("memory"):
        lines += [
            "",
            f"{mem['tasks']} finished tasks: KV {mem['kv_tasks_mb']:.1f} MiB ({mem['kv_bytes_per_task']:.0f} B/task); "
            f"RSS MiB {', '.join(f'{k} {v}' for k, v in sorted(mem['rss_mb'].items()))}; "
            f"GET /api/orchestrate/tasks first page median {mem['list_first_page_ms']['median']:.1f} ms "
            f"(p95 {mem['list_first_page_ms']['p95']:.1f}), last page median {mem['list_last_page_ms']['median']:.1f} ms",
        ]
    if "tools" in results:
        t = results["tools"]["ms"]
        lines.append(f"Tool result -> the expert's next LLM request: median {t['median']:.2f} ms, p95 {t['p95']:.2f} ms (n={t['n']})")
    if "sandbox" in results:
        b = results["sandbox"]
        if b["available"]:
            lines.append(
                f"Starting a sandboxed command ({b['name']}): median {b['sandboxed_ms']['median']:.1f} ms, "
                f"p95 {b['sandboxed_ms']['p95']:.1f} ms; a plain `sh -c true` {b['plain_ms']['median']:.1f} ms"
            )
        else:
            lines.append(f"Sandbox: unavailable here ({b['reason']})")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict:
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "seed": SEED,
        "started": datetime.now().isoformat(timespec="seconds"),
    }

    async def section(name: str, work, *, append: bool = False) -> None:
        """One section's figures; a section that fails records why and the others still run, and
        what is measured so far is on disk after every section."""
        try:
            value = await work
        except Exception as exc:  # a bench run is long: keep the other sections' figures
            value = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            progress(f"{name} failed: {value['error']}")
        if append:
            results.setdefault(name, []).append(value)
        else:
            results[name] = value
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    dags = workload(SEED, args.dags, mean_ms=args.mean_ms, sigma=0.6)
    stack = Stack(env=stack_env(), prefix="aether-bench-").start()
    try:
        progress(f"makespan: {len(dags)} DAGs through Aether, the Phase 1 loop and LangGraph at once")
        await section("makespan", makespan(stack, dags))
        progress(f"overhead: {args.chains} chains of 20 subtasks, zero latency")
        await section("overhead", overhead(stack, args.chains, 20))
        progress(f"tools: {args.tool_tasks} tasks whose expert writes, runs, fixes and passes its checks")
        await section("tools", tool_steps(stack, args.tool_tasks))
    finally:
        stop(stack)
    results["throughput"] = []
    for replicas, worktrees in ((1, True), (2, True), (4, True), (1, False)):
        progress(f"throughput: {args.tasks} tasks of 8 subtasks, {replicas} executor(s), worktrees {'on' if worktrees else 'off'}")
        await section("throughput", throughput(replicas, args.tasks, worktrees=worktrees), append=True)
    progress(f"memory: {args.memory_tasks} tasks, then listing them")
    await section("memory", memory(args.memory_tasks))
    progress(f"sandbox: {args.sandbox_runs} sandboxed commands against plain ones")
    await section("sandbox", asyncio.to_thread(sandbox_start, args.sandbox_runs))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="aether-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the bench itself")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench.json")
    args = parser.parse_args()
    if args.quick:
        args.dags, args.mean_ms, args.chains, args.tasks, args.memory_tasks = 2, 200, 2, 5, 50
        args.tool_tasks, args.sandbox_runs = 1, 5
    else:
        args.dags, args.mean_ms, args.chains, args.tasks, args.memory_tasks = 12, 1500, 10, 100, 10_000
        args.tool_tasks, args.sandbox_runs = 10, 50
    started = time.perf_counter()
    results = asyncio.run(run(args))
    results["bench_seconds"] = round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\n(full results in {args.out}; the bench took {results['bench_seconds']} s)")
    if "FAILED " in table(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
