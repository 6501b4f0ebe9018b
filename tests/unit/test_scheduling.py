import pytest

from aether_contracts.events import SubtaskFinished
from aether_contracts.state import SubtaskStatus, TaskState, TaskStatus, Usage
from aether_core.store import Unchanged
from aether_executor import scheduling
from tests.support.states import task


def ids(subtasks):
    return [s.id for s in subtasks]


def done(state: TaskState, subtask_id: str, outcome="completed", usage=None) -> scheduling.Decision:
    subtask = state.subtask(subtask_id)
    subtask.status = SubtaskStatus.EXECUTING
    event = SubtaskFinished(
        task_id=state.id,
        subtask_id=subtask_id,
        dispatch=subtask.dispatches,
        outcome=outcome,
        result=f"result of {subtask_id}" if outcome == "completed" else None,
        error=None if outcome == "completed" else "boom",
        usage=usage or Usage(total_tokens=3, calls=1),
    )
    return scheduling.finish_subtask(state, event)


def test_diamond_dispatches_each_subtask_once_its_own_dependencies_are_done():
    state = task(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))
    assert ids(scheduling.start_plan(state).ready) == ["a"]
    assert ids(done(state, "a").ready) == ["b", "c"]
    assert done(state, "b").ready == []
    decision = done(state, "c")
    assert ids(decision.ready) == ["d"] and not decision.synthesize
    final = done(state, "d")
    assert final.synthesize and state.status == TaskStatus.SYNTHESIZING
    assert state.usage.total_tokens == 12 and state.usage.calls == 4


def test_not_level_by_level_a_chain_advances_while_a_sibling_still_runs():
    # level 0 = {a, slow}; a chain a -> b -> c must not wait for slow.
    state = task(("a", []), ("slow", []), ("b", ["a"]), ("c", ["b"]))
    assert ids(scheduling.start_plan(state).ready) == ["a", "slow"]
    assert ids(done(state, "a").ready) == ["b"]
    assert ids(done(state, "b").ready) == ["c"]
    assert state.subtask("slow").status != SubtaskStatus.COMPLETED


def test_a_failure_blocks_only_its_dependents_transitively():
    state = task(("a", []), ("b", ["a"]), ("c", ["b"]), ("x", []), ("y", ["x"]))
    scheduling.start_plan(state)
    decision = done(state, "a", outcome="failed")
    assert decision.ready == []
    for blocked in ("b", "c"):
        subtask = state.subtask(blocked)
        assert subtask.status == SubtaskStatus.FAILED
        assert subtask.blocked_by == ["a"] and "depends on a" in subtask.error
    assert ids(done(state, "x").ready) == ["y"]
    final = done(state, "y")
    assert final.synthesize  # some parts succeeded: synthesize, naming what is missing


def test_when_nothing_succeeds_the_task_fails_with_the_reasons():
    state = task(("a", []), ("b", ["a"]))
    scheduling.start_plan(state)
    decision = done(state, "a", outcome="failed")
    assert decision.finished == TaskStatus.FAILED
    assert state.status == TaskStatus.FAILED and "a: boom" in state.error


def test_a_redelivered_finish_changes_nothing_and_replays_pending_work():
    state = task(("a", []), ("b", ["a"]), ("c", ["a"]))
    scheduling.start_plan(state)
    event = SubtaskFinished(task_id="t", subtask_id="a", dispatch=1, outcome="completed", result="r")
    state.subtask("a").status = SubtaskStatus.EXECUTING
    scheduling.finish_subtask(state, event)
    events_before = len(state.events)
    with pytest.raises(Unchanged) as again:
        scheduling.finish_subtask(state, event)
    assert ids(again.value.value.ready) == ["b", "c"]  # republished: deduplicated downstream
    assert len(state.events) == events_before


def test_a_stale_dispatch_is_ignored():
    state = task(("a", []))
    scheduling.start_plan(state)
    state.subtask("a").dispatches = 2  # retried since
    stale = SubtaskFinished(task_id="t", subtask_id="a", dispatch=1, outcome="failed", error="old")
    with pytest.raises(Unchanged):
        scheduling.finish_subtask(state, stale)
    assert state.subtask("a").status == SubtaskStatus.PENDING


def test_a_second_plan_ready_dispatches_nothing_new():
    state = task(("a", []), ("b", [])),
    state = state[0]
    scheduling.start_plan(state)
    with pytest.raises(Unchanged) as again:
        scheduling.start_plan(state)
    assert ids(again.value.value.ready) == ["a", "b"]
    assert [s.dispatches for s in state.subtasks] == [1, 1]


def test_a_cancelled_task_takes_no_more_work():
    state = task(("a", []), ("b", ["a"]))
    scheduling.start_plan(state)
    state.status = TaskStatus.CANCELLED
    with pytest.raises(Unchanged) as ignored:
        done(state, "a")
    assert ignored.value.value.empty
