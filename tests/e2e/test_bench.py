"""The benchmark's own code, at tiny sizes (`python -m aether_bench --quick`): every section runs
against real stacks and produces numbers that make sense. No timing is asserted here: what the
numbers are is `make bench`'s to report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aether_devstack.harness import ROOT

# Seven stacks start one after another (two for the makespan, three for throughput, one for memory,
# one for the cold start):
# minutes on two shared cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_the_bench_runs_every_section_and_its_numbers_make_sense(tmp_path: Path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "aether_bench", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1100,
    )
    assert run.returncode == 0 and "FAILED" not in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())

    makespan = results["makespan"]
    critical = [d["critical_path_s"] for d in makespan["dags"]]
    assert len(critical) == 2 and all(c > 0 for c in critical)
    assert all(8 <= d["subtasks"] <= 32 for d in makespan["dags"])
    assert makespan["level_by_level_bound"]["ratio"]["median"] >= 1
    for system in ("floor", "aether", "aether_tuned", "phase1", "langgraph"):
        (only_round,) = makespan[system]["rounds"]  # --quick: one round
        # The critical path is a lower bound for every system, the floor included.
        assert all(span >= c * 0.98 for span, c in zip(only_round["spans_s"], critical, strict=True)), (system, only_round)
        assert makespan[system]["ratio"]["n"] == 2

    for key in ("overhead", "overhead_tuned"):
        overhead = results[key]["ms"]
        assert overhead["n"] == 2 * 19 and overhead["median"] > 0, key

    assert [(t["defaults"], t["replicas"], t["worktrees"]) for t in results["throughput"]] == [
        (True, 1, True), (False, 2, True), (False, 1, False)  # --quick: the defaults and a row of each kind
    ]
    for t in results["throughput"]:
        assert t["tasks"] == 5 and t["subtasks_per_s"] > 0
        executors = [name for name in t["cpu_s"] if name.startswith("executor")]
        assert len(executors) == t["replicas"], t["cpu_s"]
        assert all(t["cpu_s"][name] > 0 for name in ("gateway", "planner", "synthesizer")), t["cpu_s"]

    memory = results["memory"]
    assert memory["tasks"] == 50
    assert memory["kv_bytes_per_task"] > 100
    assert memory["list_first_page_ms"]["n"] == 100 and memory["rss_mb"]["gateway"] > 10

    tools = results["tools"]["ms"]
    assert tools["n"] >= 4 and tools["median"] > 0  # a tool run: writes, runs, reads, edits, runs
    sandbox = results["sandbox"]
    assert sandbox["available"], sandbox  # CI has bubblewrap: the number must be real
    assert sandbox["sandboxed_ms"]["n"] == 5 and sandbox["sandboxed_ms"]["median"] > 0

    cold = results["cold_start"]["ms"]
    assert cold["n"] == 1 and cold["median"] > 0  # --quick: one type, queued before its agent existed

    # The table names each section and every system.
    for label in ("Makespan / critical path", "Floor", "make up` defaults", "Aether, tuned", "Phase 1 loop", "LangGraph",
                  "Overhead per subtask, make up defaults", "Overhead per subtask, tuned", "subtasks/s", "finished tasks",
                  "Tool result", "sandboxed command", "Agent cold start"):
        assert label in run.stdout, label
