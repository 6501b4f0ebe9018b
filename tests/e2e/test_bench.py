"""The benchmark's own code, at tiny sizes (`python -m aether_bench --quick`): every section runs
against real stacks and produces numbers that make sense. No timing is asserted here: what the
numbers are is `make bench`'s to report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aether_devstack.harness import ROOT

pytestmark = pytest.mark.e2e


def test_the_bench_runs_every_section_and_its_numbers_make_sense(tmp_path: Path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "aether_bench", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())

    makespan = results["makespan"]
    assert len(makespan["rows"]) == 2
    for row in makespan["rows"]:
        assert 8 <= row["subtasks"] <= 32
        # The critical path is a lower bound for every system, the level-by-level one for the loop.
        assert row["level_by_level_bound_s"] >= row["critical_path_s"] > 0
        for system in ("aether", "phase1", "langgraph"):
            assert row[f"{system}_s"] >= row["critical_path_s"] * 0.98, (system, row)
        assert row["phase1_s"] >= row["level_by_level_bound_s"] * 0.98, row
    for system in ("aether", "phase1", "langgraph"):
        assert makespan[system]["ratio"]["n"] == 2

    overhead = results["overhead"]["ms"]
    assert overhead["n"] == 2 * 19 and overhead["median"] > 0

    assert [(t["replicas"], t["worktrees"]) for t in results["throughput"]] == [(1, True), (2, True), (4, True), (1, False)]
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

    # The table names each section and every system.
    for label in ("Makespan / critical path", "Phase 1 loop", "LangGraph", "Overhead per subtask", "subtasks/s", "finished tasks",
                  "Tool result", "sandboxed command"):
        assert label in run.stdout, label
