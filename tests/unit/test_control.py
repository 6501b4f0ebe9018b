import pytest

from aether_contracts.events import SubtaskFinished
from aether_contracts.state import SubtaskStatus, TaskStatus, Usage
from aether_core.control import ControlError, prepare_retry, select_retry, stop_task
from aether_core.store import Unchanged
from aether_executor import scheduling
from aether_planner.planning import Plan, PlannedSubtask, splice
from tests.support.states import task


def finish(state, subtask_id, outcome="completed", *, retryable=False, tokens=10, policy=scheduling.DEFAULT):
    subtask = state.subtask(subtask_id)
    subtask.status = SubtaskStatus.EXECUTING
    event = SubtaskFinished(
        task_id="t", subtask_id=subtask_id, dispatch=subtask.dispatches, outcome=outcome,
        result="r" if outcome == "completed" else None, error=None if outcome == "completed" else "boom",
        retryable=retryable, usage=Usage(total_tokens=tokens, calls=1),
    )
    return scheduling.finish_subtask(state, event, policy)


def test_stop_cancels_what_has_not_finished_and_refuses_twice():
    state = task(("a", []), ("b", ["a"]))
    scheduling.reconcile(state)
    finish(state, "a")
    stop_task(state, TaskStatus.CANCELLED, "by the user")
    assert state.status == TaskStatus.CANCELLED and state.completed_at is not None
    assert [s.status for s in state.subtasks] == [SubtaskStatus.COMPLETED, SubtaskStatus.CANCELLED]
    with pytest.raises(ControlError) as again:
        stop_task(state, TaskStatus.CANCELLED, "again")
    assert again.value.status == 409


def test_retry_resets_the_failed_and_their_blocked_dependents_only():
    state = task(("a", []), ("b", ["a"]), ("c", []), ("d", ["b", "c"]))
    scheduling.reconcile(state)
    finish(state, "a", "failed", retryable=True)
    finish(state, "c")
    assert state.status == TaskStatus.SYNTHESIZING
    state.status = TaskStatus.COMPLETED
    with pytest.raises(ControlError, match="'c' completed"):
        select_retry(state, ["c"])
    with pytest.raises(ControlError, match="never ran"):
        select_retry(state, ["b"])
    reset = prepare_retry(state, select_retry(state, None), replan=False)
    assert reset == ["a", "b", "d"] and state.round == 2 and state.status == TaskStatus.EXECUTING
    assert state.subtask("c").status == SubtaskStatus.COMPLETED
    decision = scheduling.reconcile(state)
    assert [s.id for s in decision.ready] == ["a"] and state.subtask("a").dispatches == 2


def test_a_running_task_cannot_be_retried():
    state = task(("a", []))
    with pytest.raises(ControlError) as refused:
        select_retry(state, None)
    assert refused.value.status == 409


def test_an_unfixable_failure_waits_for_a_replan_instead_of_failing_its_dependents():
    state = task(("a", []), ("b", ["a"]))
    scheduling.reconcile(state)
    decision = finish(state, "a", "failed", retryable=False, policy=scheduling.Policy(auto_replan=True))
    assert decision.replan == ["a"] and not decision.synthesize
    assert state.subtask("b").status == SubtaskStatus.PENDING and state.subtask("a").replan_pending

    plan = Plan("split", [PlannedSubtask("x", "one", "database-expert"), PlannedSubtask("y", "two", "python-backend", ["x"])])
    assert splice(state, state.subtask("a"), plan) == ["a.1.x", "a.1.y"]
    assert [s.id for s in state.subtasks] == ["a", "a.1.x", "a.1.y", "b"]
    assert state.subtask("b").depends_on == ["a.1.y"] and state.subtask("a.1.x").depends_on == []
    assert [s.id for s in scheduling.reconcile(state).ready] == ["a.1.x"]


def test_a_replacement_never_takes_an_id_the_state_or_the_sub_plan_already_uses():
    # Issue 19, finding 6: the fallback id `a.1.<n>` was not checked against the state.
    state = task(("a", []), ("a.1.x", []), ("a.1.1", []), ("a.1.3", []), ("b", ["a"]))
    scheduling.reconcile(state)
    finish(state, "a", "failed", retryable=False, policy=scheduling.Policy(auto_replan=True))
    long = "y" * 64
    plan = Plan("split", [
        PlannedSubtask("x", "taken as a.1.x", "fullstack"),
        PlannedSubtask("2", "a.1.2 is free but the fallback of x may take it", "fullstack"),
        PlannedSubtask(long, "too long for a prefixed id", "fullstack", ["x", "2"]),
    ])
    new_ids = splice(state, state.subtask("a"), plan)
    assert new_ids == ["a.1.2", "a.1.4", "a.1.5"]
    ids = [s.id for s in state.subtasks]
    assert len(ids) == len(set(ids)) and all(len(i) <= 64 for i in ids)
    state.check()
    assert state.subtask("a.1.5").depends_on == ["a.1.2", "a.1.4"]
    assert state.subtask("b").depends_on == ["a.1.5"]
    assert [s.id for s in scheduling.reconcile(state).ready] == ["a.1.2", "a.1.4"]


def test_a_second_unfixable_failure_is_not_replanned_again():
    state = task(("a", []), ("b", ["a"]))
    scheduling.reconcile(state)
    state.subtask("a").replans = 1
    decision = finish(state, "a", "failed", policy=scheduling.Policy(auto_replan=True))
    assert decision.replan == [] and state.subtask("b").status == SubtaskStatus.FAILED


def test_the_token_budget_cancels_what_has_not_started():
    state = task(("a", []), ("b", ["a"]), ("c", ["b"]))
    scheduling.reconcile(state)
    decision = finish(state, "a", tokens=500, policy=scheduling.Policy(token_budget=400))
    assert decision.ready == [] and decision.synthesize
    assert [s.status for s in state.subtasks] == [SubtaskStatus.COMPLETED, SubtaskStatus.CANCELLED, SubtaskStatus.CANCELLED]


def test_an_expired_deadline_fails_the_task_and_asks_running_work_to_stop():
    state = task(("a", []))
    scheduling.reconcile(state)
    decision = scheduling.expire(state, 60)
    assert decision.finished == TaskStatus.FAILED and "within 60s" in decision.cancel
    assert state.status == TaskStatus.FAILED
    with pytest.raises(Unchanged):
        scheduling.expire(state, 60)
    fresh = task(("a", []))
    fresh.round = 2
    with pytest.raises(Unchanged):
        scheduling.expire(fresh, 60, 1)  # armed before a retry: no longer applies
