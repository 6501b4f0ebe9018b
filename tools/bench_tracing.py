"""What tracing costs: the same tasks through stacks with and without OTLP export, side by side.

    .venv/bin/python tools/bench_tracing.py [--tasks 100] [--rounds 10] [--protocol grpc]
                                            [--baseline /path/to/checkout-before-tracing]

Each configuration is a whole stack as `make up` runs it (every service its own process), with
the zero-latency LLM simulator, so what is measured is Aether's own work. The stacks run at the
same time and take turns, round by round (the order rotates), so they share the machine's noise.
`traced` exports every span over OTLP to a receiver in this process (standing in for Jaeger) with
the SDK's default batching; `untraced` has no OTEL_* variable; `--baseline` adds a checkout of
the code before tracing existed (with its own `.venv`), to show what "off" costs.

A task's makespan is `created_at` → `completed_at` from its state; a round's throughput is its
tasks over the time from the first creation to the last completion. The machine's load drifts
(other work shares it), so besides each configuration's overall medians the script reports the
median of the per-round ratios: each compares runs made seconds apart. It also reports the CPU
time the services' processes spent per task (from /proc), which the machine's other load barely
moves. Uses the test suite's support code (tests/support); run it from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.otlp import receiver  # noqa: E402
from tests.support.plans import scripted, subtask  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

DIAMOND = [
    subtask("schema", "database-expert"),
    subtask("api", "python-backend", ["schema"]),
    subtask("ui", "react-frontend", ["schema"]),
    subtask("tests", "testing-expert", ["api", "ui"]),
]


SERVICES = ("gateway", "planner", "executor", "synthesizer")


def cpu_seconds(stack: Stack) -> float:
    """User + system CPU time of the stack's service processes so far (Linux /proc)."""
    total = 0
    for name in SERVICES:
        with open(f"/proc/{stack.pid(name)}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def run_round(stack: Stack, count: int, tag: str) -> tuple[list[float], float]:
    async with stack.client() as client:
        created = await asyncio.gather(
            *(stack.submit(client, scripted(f"Bench {tag} {n}", DIAMOND)) for n in range(count))
        )
        ids = {c["id"] for c in created}
        while True:
            # One list request per poll, not one per task: polling must not be the load.
            response = await client.get("/api/orchestrate/tasks", params={"limit": 500})
            mine = [t for t in response.json() if t["id"] in ids]
            if len(mine) == len(ids) and all(t["completed_at"] for t in mine):
                break
            await asyncio.sleep(0.25)
    failed = [t["id"] for t in mine if t["status"] != "completed"]
    if failed:
        raise SystemExit(f"{stack.url}: {len(failed)} task(s) did not complete: {failed[:3]}")
    starts = [datetime.fromisoformat(t["created_at"]) for t in mine]
    ends = [datetime.fromisoformat(t["completed_at"]) for t in mine]
    spans = [(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)]
    return spans, count / (max(ends) - min(starts)).total_seconds()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100, help="tasks per configuration")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=0, help="the simulated LLM's latency")
    parser.add_argument("--protocol", default="http/protobuf", choices=["http/protobuf", "grpc"])
    parser.add_argument("--baseline", type=Path, help="a checkout without tracing, with its .venv")
    args = parser.parse_args()

    sink = receiver(args.protocol).start()
    stacks: dict[str, Stack] = {}
    # One executor runs every agent type: the CPU of every process that works on a task is then
    # in devstack.json (agents started by a container-manager are not), and pool scaling does
    # not add its own noise.
    common = {"AETHER_SIM_LATENCY_MS": str(args.latency_ms), "AETHER_AGENT_BACKEND": "none"}
    if args.baseline:
        base = args.baseline.resolve()
        stacks["baseline"] = Stack(env=common, python=str(base / ".venv/bin/python"), root=base)
    stacks["untraced"] = Stack(env=common)
    stacks["traced"] = Stack(
        env=common
        | {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": args.protocol}
    )
    makespans: dict[str, list[float]] = {name: [] for name in stacks}
    round_medians: dict[str, list[float]] = {name: [] for name in stacks}
    throughputs: dict[str, list[float]] = {name: [] for name in stacks}
    cpu: dict[str, float] = {name: 0.0 for name in stacks}
    per_round = max(1, args.tasks // args.rounds)
    try:
        for stack in stacks.values():
            stack.start()
        names = list(stacks)
        for name in names:  # warm-up: imports, connections, first consumers
            await run_round(stacks[name], 4, "warm-up")
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                used = cpu_seconds(stacks[name])
                spans, rate = await run_round(stacks[name], per_round, f"{name}-{r}")
                cpu[name] += cpu_seconds(stacks[name]) - used
                makespans[name] += spans
                round_medians[name].append(statistics.median(spans))
                throughputs[name].append(rate)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for stack in stacks.values():
            stack.stop()
        sink.stop()

    print(
        f"{per_round * args.rounds} four-subtask tasks per configuration in {args.rounds} rounds of "
        f"{per_round}, simulator latency {args.latency_ms:g} ms, OTLP {args.protocol}; "
        f"{len(sink.snapshot())} spans exported"
    )
    print(
        f"{'configuration':<14}{'median makespan':>18}{'p90 makespan':>15}"
        f"{'throughput (median round)':>28}{'service CPU per task':>23}"
    )
    tasks = per_round * args.rounds
    for name in stacks:
        p90 = statistics.quantiles(makespans[name], n=10)[-1]
        print(
            f"{name:<14}{statistics.median(makespans[name]) * 1000:>15.0f} ms{p90 * 1000:>12.0f} ms"
            f"{statistics.median(throughputs[name]):>21.1f} tasks/s{cpu[name] / tasks * 1000:>18.1f} ms"
        )

    def ratios(a: str, b: str) -> str:
        overall = statistics.median(makespans[a]) / statistics.median(makespans[b])
        paired = statistics.median(x / y for x, y in zip(round_medians[a], round_medians[b], strict=True))
        rate = statistics.median(x / y for x, y in zip(throughputs[a], throughputs[b], strict=True))
        return (
            f"{a} / {b}: median makespan x{overall:.3f} overall, x{paired:.3f} per round (median); "
            f"throughput x{rate:.3f} per round (median); CPU per task x{cpu[a] / cpu[b]:.3f}"
        )

    print(ratios("traced", "untraced"))
    if "baseline" in stacks:
        print(ratios("untraced", "baseline"))


if __name__ == "__main__":
    asyncio.run(main())
