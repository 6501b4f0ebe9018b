"""`make bench`: Aether measured against the lower bound and against the alternatives, side by
side in one run. Prints a table and writes JSON (artifacts/bench.json).

Aether runs as `make up` runs it (the defaults: a container-manager's pool of agent processes per
type); rows from a tuned stack (one executor for every type, 64 subtasks at once, no pool) are
labelled as such.

1. makespan / critical path on a fixed seed of random DAGs (8-32 subtasks, log-normal latencies
   with a 0.5 s median) submitted at once, for the floor (an in-process scheduler awaiting exactly
   each subtask's dependencies), Aether, the Phase 1 level-by-level loop and LangGraph, one system
   at a time, same simulator, same latencies, three rounds;
2. overhead per subtask with a zero-latency simulator: a dependency's completion to its
   dependent's LLM request;
3. throughput, zero latency, on the defaults and with 1, 2 and 4 tuned executor replicas, and the
   CPU each service used;
4. memory for 10,000 finished tasks, and the time of listing them;
5. experts that act, zero latency: from a tool's result to the expert's next LLM request, and the
   cost of starting a sandboxed command (`true`) against a plain one;
6. agent cold start on the defaults: a subtask queued while no agent of its type runs, to its
   start on the agent the pool started for it (one type after another, each type once).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
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

from aether_core.templates import load_registry
from aether_devstack.harness import ROOT, TERMINAL, Stack

from .baselines import Llm, floor, langgraph, phase1
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


def default_env(**extra: str) -> dict[str, str]:
    """The stack exactly as `make up` runs it; only the logs are quieter."""
    return {"AETHER_LOG_LEVEL": "WARNING", **extra}


def stack_env(**extra: str) -> dict[str, str]:
    """The tuned stack: one executor for every type, without a pool limit, as the baselines have
    none. Its rows are labelled; the defaults are `default_env`."""
    return {
        "AETHER_AGENT_BACKEND": "none",
        "AETHER_WORKER_CONCURRENCY": "64",
        "AETHER_MAX_ACTIVE_TASKS": "1000000",
        "AETHER_LOG_LEVEL": "WARNING",
        **extra,
    }


SYSTEMS = {
    "floor": "Floor: in-process, each subtask awaits exactly its dependencies",
    "aether": "**Aether** (`make up` defaults)",
    "aether_tuned": "Aether, tuned (one executor for every type, 64 at once, no pool)",
    "phase1": "Phase 1 loop (`asyncio.gather` per level)",
    "langgraph": "LangGraph",
}


# -- 1. makespan / critical path ------------------------------------------------------------------
async def aether_burst(stack: Stack, dags: list[Dag]) -> list[float]:
    async with stack.client(timeout=120) as client:
        ids = await asyncio.gather(*(submit(client, dag.description()) for dag in dags))
        tasks = await wait_all(client, ids, timeout=900)
    assert all(t["status"] == "completed" for t in tasks), [t["logs"][-3:] for t in tasks if t["status"] != "completed"][:2]
    return [(when(t["completed_at"]) - when(t["created_at"])).total_seconds() for t in tasks]


async def makespan(stacks: dict[str, Stack], dags: list[Dag], rounds: int) -> dict:
    """Every DAG submitted at once to one system, the systems one after another (each gets the
    machine to itself), `rounds` times; the ratio is each DAG's span over its critical path."""
    llm = Llm(f"{stacks['aether'].sim_url}/v1")
    runs = {
        "floor": lambda: asyncio.gather(*(floor(llm, d) for d in dags)),
        "aether": lambda: aether_burst(stacks["aether"], dags),
        "aether_tuned": lambda: aether_burst(stacks["aether_tuned"], dags),
        "phase1": lambda: asyncio.gather(*(phase1(llm, d) for d in dags)),
        "langgraph": lambda: asyncio.gather(*(langgraph(llm, d) for d in dags)),
    }
    critical = [d.critical_path_ms() / 1000 for d in dags]
    result: dict = {"dags": [{"dag": d.name, "subtasks": len(d.nodes), "critical_path_s": c} for d, c in zip(dags, critical, strict=True)]}
    for system in SYSTEMS:
        result[system] = {"rounds": []}
    for _ in range(rounds):
        for system, go in runs.items():
            spans = list(await go())
            ratios = [span / c for span, c in zip(spans, critical, strict=True)]
            result[system]["rounds"].append({"ratio": summary(ratios), "makespan_s": summary(spans), "spans_s": spans})
    await llm.close()
    for system in SYSTEMS:
        every = [s / c for r in result[system]["rounds"] for s, c in zip(r["spans_s"], critical, strict=True)]
        result[system]["ratio"] = summary(every)
    result["level_by_level_bound"] = {"ratio": summary([d.level_by_level_ms() / d.critical_path_ms() for d in dags])}
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


# -- 6. agent cold start -------------------------------------------------------------------------
async def cold_start(types: int) -> dict:
    """A fresh `make up` stack, no agent running: one one-subtask task per agent type, one after
    another; each subtask waits from queued to started for the agent the pool starts for it
    (the pool hears the plan, the agent process starts, connects and pulls)."""
    stack = Stack(env=default_env(), prefix="aether-bench-").start()
    waits: list[float] = []
    try:
        async with stack.client() as client:
            for agent_type in load_registry().agent_types[:types]:
                plan = {"analysis": "bench", "subtasks": [{"id": "t", "description": "Cold", "agent_type": agent_type, "depends_on": []}]}
                task = await stack.wait_task(client, await submit(client, f"Cold {agent_type}\nSIM-PLAN: {json.dumps(plan)}"), timeout=300)
                assert task["status"] == "completed", task["logs"][-5:]
                sub = task["subtasks"][0]
                waits.append((when(sub["started_at"]) - when(sub["queued_at"])).total_seconds() * 1000)
    finally:
        stop(stack)
    return {"ms": summary(waits)}


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


async def throughput(replicas: int, tasks: int, *, worktrees: bool = True, defaults: bool = False) -> dict:
    """`defaults`: the stack as `make up` runs it (`replicas` is then 1, the scheduler's); else
    the tuned stack with `replicas` executors. `worktrees=False`: agents without git worktrees
    (AETHER_WORKSPACE_DIR=off), which is what the orchestration itself costs; files still go
    through the Object Store."""
    env = default_env() if defaults else stack_env()
    if not worktrees:
        env["AETHER_WORKSPACE_DIR"] = "off"
    stack = Stack(env=env, scale=None if defaults else f"executor={replicas}", prefix="aether-bench-").start()
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
            "defaults": defaults,
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
        rounds = len(m["aether"]["rounds"])
        lines += [
            "",
            f"| Makespan / critical path, {len(m['dags'])} DAGs at once | median | p95 | median makespan |",
            "| --- | --- | --- | --- |",
        ]

        def spread(system: str, key: str, q: str) -> str:
            values = [r[key][q] for r in m[system]["rounds"]]
            text = f"{statistics.median(values):.3f}" if key == "ratio" else f"{statistics.median(values):.2f} s"
            return text + (f" ({min(values):.3f}–{max(values):.3f})" if key == "ratio" and rounds > 1 else "")

        for system, label in SYSTEMS.items():
            lines.append(f"| {label} | {spread(system, 'ratio', 'median')} | {spread(system, 'ratio', 'p95')} | {spread(system, 'makespan_s', 'median')} |")
        b = m["level_by_level_bound"]["ratio"]
        lines.append(f"| (level-by-level lower bound) | {b['median']:.3f} | {b['p95']:.3f} | |")
        if rounds > 1:
            lines.append(f"(median of {rounds} rounds, the rounds' range in brackets)")
    for key, label in (("overhead", "make up defaults"), ("overhead_tuned", "tuned")):
        if o := results.get(key):
            o = o["ms"]
            lines += [f"Overhead per subtask, {label} (dependency done -> dependent's LLM request): median {o['median']:.2f} ms, p95 {o['p95']:.2f} ms (n={o['n']})"]
    if results.get("throughput"):
        lines += ["", "| Stack (zero latency) | tasks/s | subtasks/s | CPU s per service |", "| --- | --- | --- | --- |"]
        for t in results["throughput"]:
            cpu = ", ".join(f"{k} {v}" for k, v in sorted(t["cpu_s"].items()) if v >= 0.05)
            label = "`make up` defaults" if t.get("defaults") else f"tuned, {t['replicas']} executor(s)"
            label += "" if t.get("worktrees", True) else " (agents without git worktrees)"
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
    if (c := results.get("cold_start")) and "ms" in c:
        c = c["ms"]
        lines.append(f"Agent cold start, defaults (queued -> started on a new agent process): median {c['median']:.0f} ms, p95 {c['p95']:.0f} ms (n={c['n']})")
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

    # A 0.5 s median: the mean of a log-normal is its median times exp(sigma^2 / 2).
    dags = workload(SEED, args.dags, mean_ms=args.median_ms * math.exp(0.6**2 / 2), sigma=0.6)
    stacks = {
        "aether": Stack(env=default_env(), prefix="aether-bench-").start(),
        "aether_tuned": Stack(env=stack_env(), prefix="aether-bench-").start(),
    }
    try:
        progress(f"makespan: {len(dags)} DAGs at once through each system, {args.rounds} rounds")
        await section("makespan", makespan(stacks, dags, args.rounds))
        progress(f"overhead: {args.chains} chains of 20 subtasks, zero latency, make up defaults")
        await section("overhead", overhead(stacks["aether"], args.chains, 20))
        progress(f"overhead: {args.chains} chains of 20 subtasks, zero latency, tuned")
        await section("overhead_tuned", overhead(stacks["aether_tuned"], args.chains, 20))
        progress(f"tools: {args.tool_tasks} tasks whose expert writes, runs, fixes and passes its checks (tuned)")
        await section("tools", tool_steps(stacks["aether_tuned"], args.tool_tasks))
    finally:
        for stack in stacks.values():
            stop(stack)
    results["throughput"] = []
    progress(f"throughput: {args.tasks} tasks of 8 subtasks, make up defaults")
    await section("throughput", throughput(1, args.tasks, defaults=True), append=True)
    for replicas, worktrees in args.tuned_rows:
        progress(f"throughput: {args.tasks} tasks of 8 subtasks, tuned, {replicas} executor(s), worktrees {'on' if worktrees else 'off'}")
        await section("throughput", throughput(replicas, args.tasks, worktrees=worktrees), append=True)
    progress(f"memory: {args.memory_tasks} tasks, then listing them")
    await section("memory", memory(args.memory_tasks))
    progress(f"cold start: {args.cold_types} agent types, each started for its first subtask")
    await section("cold_start", cold_start(args.cold_types))
    progress(f"sandbox: {args.sandbox_runs} sandboxed commands against plain ones")
    await section("sandbox", asyncio.to_thread(sandbox_start, args.sandbox_runs))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="aether-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the bench itself")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench.json")
    args = parser.parse_args()
    if args.quick:
        args.dags, args.median_ms, args.rounds, args.chains, args.tasks, args.memory_tasks = 2, 100, 1, 2, 5, 50
        args.tool_tasks, args.sandbox_runs, args.cold_types = 1, 5, 1
        # One row of each kind (several executors, agents without worktrees): two stacks, not four.
        args.tuned_rows = ((2, True), (1, False))
    else:
        args.dags, args.median_ms, args.rounds, args.chains, args.tasks, args.memory_tasks = 12, 500, 3, 10, 100, 10_000
        args.tool_tasks, args.sandbox_runs, args.cold_types = 10, 50, 6
        args.tuned_rows = ((1, True), (2, True), (4, True), (1, False))
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
