"""Issue 15, what waits for a person, as pure functions: a plan a person edited is validated
strictly (every reason named), the deadlines of a plan's approval and of a question, and the
task's deadline that waits with the person."""

from datetime import timedelta

import pytest

from aether_contracts.events import TaskExpired
from aether_contracts.state import Approval, Subtask, SubtaskStatus, TaskState, TaskStatus, utcnow
from aether_core.plans import PlanError, parse_plan
from aether_core.store import Unchanged
from aether_core.templates import load_registry
from aether_executor import scheduling
from tests.support.states import task

REGISTRY = load_registry(None)


def problems(plan: dict, max_subtasks: int = 32) -> list[str]:
    with pytest.raises(PlanError) as refused:
        parse_plan(plan, REGISTRY, max_subtasks, strict=True)
    return refused.value.problems


# -- an edited plan ------------------------------------------------------------------------------


def test_an_edited_plan_is_refused_with_every_reason_at_once():
    found = problems({
        "analysis": "mine",
        "notes": "a field plans do not have",
        "subtasks": [
            {"id": "x", "description": "one", "agent_type": "cobol-expert", "depends_on": ["ghost", "y"], "deps": []},
            {"id": "y", "description": "two", "agent_type": "fullstack", "depends_on": ["x"]},
            {"id": "y", "description": "again", "agent_type": "fullstack"},
            {"id": "z", "description": " ", "agent_type": "fullstack"},
        ],
    }, max_subtasks=3)
    assert found[0] == "the plan has unknown field(s) 'notes'; it has 'analysis' and 'subtasks'"
    assert "the plan has 4 subtasks; at most 3 are allowed" in found
    assert any(p.startswith("subtask 'x' has unknown field(s) 'deps'") for p in found)
    assert any(p.startswith("subtask 'x': unknown agent type 'cobol-expert'; known: database-expert") for p in found)
    assert "the id 'y' is used by more than one subtask" in found
    assert "subtask 'z' needs a non-empty 'description'" in found
    assert "subtask 'x' depends on 'ghost', which the plan does not contain" in found
    assert "the dependencies form a cycle: x -> y -> x" in found
    assert len(found) == 8, found


def test_an_edited_plan_names_no_agent_type_for_it_and_nothing_is_guessed():
    assert problems({"subtasks": [{"id": "a", "description": "Build the React UI"}]}) == [
        f"subtask 'a': unknown agent type None; known: {', '.join(sorted(REGISTRY.agent_types))}"
    ]
    plan = parse_plan({"subtasks": [{"id": "a", "description": "UI", "agent_type": "react-frontend", "verify": ["npm test"]}]},
                      REGISTRY, 32, strict=True)
    assert [(s.id, s.agent_type, s.verify) for s in plan.subtask_states()] == [("a", "react-frontend", ["npm test"])]


def test_jasons_plans_are_still_read_leniently():
    plan = parse_plan('{"subtasks": [{"id": "a", "description": "Build the React UI", "agent_type": "frontend-wizard"}]}', REGISTRY, 32)
    assert plan.subtasks[0].agent_type == "react-frontend" and "was mapped to 'react-frontend'" in plan.notes[0]


# -- deadlines -----------------------------------------------------------------------------------


def awaiting_approval() -> TaskState:
    state = task(("a", []), status=TaskStatus.AWAITING_APPROVAL)
    state.approval = Approval(timeout_s=60, requested_at=utcnow() - timedelta(seconds=61))
    return state


def test_a_plan_not_approved_in_time_fails_its_task_with_the_reason():
    state = awaiting_approval()
    decision = scheduling.deadline_passed(state, TaskExpired(task_id="t", timeout_s=60, waiting="approval"))
    assert decision.finished == TaskStatus.FAILED and state.status == TaskStatus.FAILED
    assert state.error == "no one approved its plan within 60s (AETHER_APPROVAL_TIMEOUT_S)"
    assert state.approval.decision == "expired" and state.subtask("a").status == SubtaskStatus.CANCELLED


def test_an_approval_deadline_after_the_approval_changes_nothing():
    state = awaiting_approval()
    state.status, state.approval.decision = TaskStatus.EXECUTING, "approved"
    with pytest.raises(Unchanged):
        scheduling.deadline_passed(state, TaskExpired(task_id="t", timeout_s=60, waiting="approval"))


def test_the_tasks_deadline_waits_with_the_person_instead_of_failing_the_task():
    state = awaiting_approval()
    with pytest.raises(Unchanged) as postponed:
        scheduling.deadline_passed(state, TaskExpired(task_id="t", timeout_s=3600))
    assert postponed.value.value.postpone == 3600 and state.status == TaskStatus.AWAITING_APPROVAL
    asking = task(("a", []), ("b", []))
    asking.subtask("a").status = SubtaskStatus.AWAITING_INPUT
    with pytest.raises(Unchanged) as postponed:
        scheduling.expire(asking, 3600)
    assert postponed.value.value.postpone == 3600
    asking.subtask("a").status = SubtaskStatus.EXECUTING
    assert scheduling.expire(asking, 3600).finished == TaskStatus.FAILED


def asked(state: TaskState, subtask_id: str, number: int = 1) -> Subtask:
    subtask = state.subtask(subtask_id)
    subtask.status, subtask.question, subtask.questions = SubtaskStatus.AWAITING_INPUT, "Which database?", number
    subtask.conversation, subtask.dispatches, subtask.queued_at = "tasks/t/subtasks/a/conversations/x", 1, utcnow()
    return subtask


def test_an_unanswered_question_fails_its_subtask_and_dependents_while_the_other_branch_goes_on():
    state = task(("a", []), ("after-a", ["a"]), ("b", []))
    asked(state, "a")
    state.subtask("b").status = SubtaskStatus.EXECUTING
    expired = TaskExpired(task_id="t", timeout_s=60, waiting="question", subtask_id="a", question_no=1)
    decision = scheduling.deadline_passed(state, expired)
    a = state.subtask("a")
    assert a.status == SubtaskStatus.FAILED and a.conversation is None
    assert a.error == "its question was not answered within 60s (AETHER_QUESTION_TIMEOUT_S): Which database?"
    assert state.subtask("after-a").status == SubtaskStatus.FAILED and state.subtask("after-a").blocked_by == ["a"]
    assert state.status == TaskStatus.EXECUTING and not decision.finished and not decision.synthesize


def test_a_question_deadline_for_an_answered_or_earlier_question_changes_nothing():
    state = task(("a", []))
    subtask = asked(state, "a", number=2)
    for stale in (1, 3):
        with pytest.raises(Unchanged):
            scheduling.deadline_passed(state, TaskExpired(task_id="t", timeout_s=60, waiting="question", subtask_id="a", question_no=stale))
    subtask.status, subtask.answer = SubtaskStatus.PENDING, "Postgres"
    with pytest.raises(Unchanged):
        scheduling.deadline_passed(state, TaskExpired(task_id="t", timeout_s=60, waiting="question", subtask_id="a", question_no=2))


def test_an_answered_subtask_is_queued_again_with_a_new_dispatch_and_waits_for_nothing_else():
    state = task(("a", []), ("b", ["a"]))
    subtask = asked(state, "a")
    subtask.status, subtask.answer, subtask.queued_at = SubtaskStatus.PENDING, "Postgres", None
    decision = scheduling.reconcile(state)
    assert [s.id for s in decision.ready] == ["a"] and subtask.dispatches == 2 and subtask.resuming
