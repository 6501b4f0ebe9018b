"""How `aether` says an expert's steps: the same few words as the Mission Board (ui/src/steps.ts)."""

import json

from aether_cli import steps
from aether_cli.render import StepRounds, step_event


def step(index: int, tool: str, arguments, *, kind: str = "tool", attempt: int = 1, at: str = "2026-01-01T00:00:01Z", **extra) -> dict:
    return {
        "task_id": "t", "subtask_id": "a", "attempt": attempt, "index": index, "tool": tool, "call_id": f"c{index}",
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments), "ok": True, "exit_code": None,
        "summary": "", "output": "", "duration_ms": 3, "at": at, "kind": kind, **extra,
    }


def test_each_tool_call_in_a_few_words():
    assert steps.line(step(1, "write_file", {"path": "app/main.py", "content": "é\n"})) == "write_file app/main.py (3 bytes)"
    assert steps.line(step(2, "run_command", {"command": "python3 -m pytest -q"})) == "run_command python3 -m pytest -q"
    assert steps.line(step(3, "edit_file", {"path": "app/main.py", "old": "a", "new": "b"})) == "edit_file app/main.py"
    assert steps.line(step(4, "list_files", {})) == "list_files ."
    cut = '{"path": "big.py", "content": "' + "x" * 1970
    assert steps.target(step(5, "write_file", cut, summary="created big.py (5000 bytes)")) == "big.py (5000 bytes)"
    assert steps.target(step(6, "read_file", "{}", ok=False)) == "?"
    assert steps.target(step(1, "check", "python3 -m pytest -q", kind="check")) == "python3 -m pytest -q"


def test_outcomes():
    assert steps.outcome(step(1, "run_command", {}, ok=False, exit_code=1)) == "exit 1"
    assert steps.outcome(step(2, "nope", {}, ok=False, summary="error: unknown tool 'nope'")) == "error"
    assert steps.outcome(step(1, "check", "x", kind="check", exit_code=0)) == "passed"
    assert steps.outcome(step(2, "check", "x", kind="check", ok=False, summary="could not run: no sandbox")) == "failed (not run)"


def test_steps_in_order_once_and_checks_by_round():
    listed = steps.ordered([
        step(1, "write_file", {}, at="2026-01-01T00:00:01.000001Z"),
        step(1, "check", "x", kind="check", at="2026-01-01T00:00:01.000002Z"),
        step(2, "edit_file", {}, at="2026-01-01T00:00:01.000003Z"),
        step(2, "check", "x", kind="check", at="2026-01-01T00:00:01.000004Z"),
        step(1, "write_file", {}, at="2026-01-01T00:00:01.000001Z"),  # again: once
        step(1, "list_files", {}, attempt=2, at="2026-01-01T00:00:00Z"),  # a later run, whatever its clock
    ])
    assert [(s["attempt"], s["kind"], s["index"]) for s in listed] == [
        (1, "tool", 1), (1, "check", 1), (1, "tool", 2), (1, "check", 2), (2, "tool", 1)]
    assert [(r, starts) for _, r, starts in steps.rounds(listed)] == [(0, True), (1, True), (0, True), (2, True), (0, True)]
    live = StepRounds()
    assert [live.add(s) for s in [*listed[:2], listed[1], listed[2], listed[3]]] == [0, 1, None, 0, 2]
    assert step_event(listed[3], 2) == "  a · Aether's check, round 2: x → passed (3 ms)"


def test_a_verification_in_one_line():
    passed = {"passed": True, "rounds": 1, "checks": [{"command": "pytest -q", "passed": True, "exit_code": 0}]}
    failed = {"passed": False, "rounds": 3, "checks": [{"command": "pytest -q", "passed": False, "exit_code": 1, "output_tail": "exit code 1"}]}
    assert steps.verification_line(passed) == "pass (round 1): pytest -q ✓"
    assert steps.verification_line(failed) == "FAIL after 3 round(s): pytest -q ✗ exit 1"
