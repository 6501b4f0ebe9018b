"""Outcomes are counted once, at the write that makes them (not at every redelivery)."""

from datetime import timedelta

from prometheus_client import REGISTRY

from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus, Usage
from aether_core import metrics


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_transition_is_counted_once_with_its_outcome_and_duration():
    state = TaskState(
        id="t-metrics",
        description="d",
        status=TaskStatus.EXECUTING,
        subtasks=[
            Subtask(id="a", description="a", agent_type="unit-a", status=SubtaskStatus.EXECUTING),
            Subtask(id="b", description="b", agent_type="unit-b", depends_on=["a"]),
        ],
    )
    a, b = state.subtasks
    completed = ("aether_subtasks_finished_total", {"agent_type": "unit-a", "outcome": "completed"})
    blocked = ("aether_subtasks_finished_total", {"agent_type": "unit-b", "outcome": "blocked"})
    duration = ("aether_subtask_duration_seconds_sum", {"agent_type": "unit-a", "outcome": "completed"})
    failed = ("aether_tasks_finished_total", {"outcome": "failed"})
    base = {name: sample(*key) for name, key in [("completed", completed), ("blocked", blocked), ("duration", duration), ("failed", failed)]}

    before = metrics.snapshot(state)
    a.started_at = state.created_at
    a.completed_at = a.started_at + timedelta(seconds=2)
    a.status = SubtaskStatus.COMPLETED
    a.usage = Usage(prompt_tokens=70, completion_tokens=30, total_tokens=100, calls=1)
    tokens = ("aether_subtask_tokens_total", {"agent_type": "unit-a", "type": "input"})
    tokens_before = sample(*tokens)
    metrics.record_transition(before, state)
    assert sample(*completed) == base["completed"] + 1
    assert sample(*duration) == base["duration"] + 2.0
    assert sample(*tokens) == tokens_before + 70

    # A write that changes something else (a log line, a redelivery) counts nothing again.
    metrics.record_transition(metrics.snapshot(state), state)
    assert sample(*completed) == base["completed"] + 1

    before = metrics.snapshot(state)
    b.status, b.blocked_by = SubtaskStatus.FAILED, ["x"]
    state.set_status(TaskStatus.FAILED, "failed")
    metrics.record_transition(before, state)
    assert sample(*blocked) == base["blocked"] + 1
    assert sample(*failed) == base["failed"] + 1
    metrics.record_transition(metrics.snapshot(state), state)
    assert sample(*failed) == base["failed"] + 1
