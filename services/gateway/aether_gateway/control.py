"""What a client does to a task besides submitting it, as plain functions over the gateway: the
REST routes (routes/tasks.py) call them, and so can any other front end (an MCP tool).

Each is one compare-and-set on the task's state, then the event that moves the work on. They
raise `ControlError` (404: no such task for this tenant, 409: the state does not allow it, 422:
an edited plan that is invalid, with `problems`), which a route turns into its HTTP answer.

Approvals and answers (issue 15) are exactly-once by the compare-and-set: a second approval or
answer is a 409. One that repeats a change already stored (its gateway died before publishing
the event that follows it) republishes that event before it says 409, deduplicated by its id,
so the work goes on and still happens once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aether_contracts import subjects
from aether_contracts.events import PlanReady, TaskFinished
from aether_contracts.state import (
    EventKind,
    InvalidTaskState,
    SubtaskStatus,
    TaskState,
    TaskStatus,
    utcnow,
)
from aether_contracts.waiting import MAX_ANSWER_CHARS
from aether_core import deadlines, telemetry
from aether_core.control import ControlError, stop_task
from aether_core.plans import PlanError, parse_plan
from aether_core.store import Mutation, TaskNotFound, Unchanged

from .auth import Principal, visible
from .deps import Gateway

T = TypeVar("T")

ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class InvalidPlan(ControlError):
    """An edited plan that cannot run: every reason is in `problems`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(422, "the edited plan cannot be used: " + "; ".join(problems))
        self.problems = problems


def plausible_task_id(task_id: str) -> bool:
    # KV keys allow a limited ASCII alphabet; anything else cannot be a task and must not reach
    # NATS (found by schemathesis: 'Æ' is alphanumeric to Python, and an invalid key to NATS).
    return 0 < len(task_id) <= 128 and all(c in ID_ALPHABET for c in task_id)


async def change_task(
    gw: Gateway, principal: Principal, task_id: str, change: Callable[[TaskState], T]
) -> Mutation[T]:
    """`change` by compare-and-set on a task this tenant may see (another's is a 404)."""

    def guarded(state: TaskState) -> T:
        if not visible(principal, state.tenant):
            raise TaskNotFound(task_id)
        return change(state)

    if not plausible_task_id(task_id):
        raise ControlError(404, f"no task with id '{task_id}'")
    try:
        mutation = await gw.store.mutate(task_id, guarded)
    except TaskNotFound:
        raise ControlError(404, f"no task with id '{task_id}'") from None
    except InvalidTaskState as broken:  # the store failed the task instead, and says why
        raise ControlError(409, f"task {task_id} cannot be changed: {broken}") from None
    if mutation.changed:
        gw.index.upsert(mutation.state, mutation.revision)
    return mutation


async def arm_deadline(gw: Gateway, state: TaskState) -> None:
    """The task's deadline, from now (a message schedule; one per task, replaced each time)."""
    await deadlines.arm_task(gw.runtime, state, state.timeout_s or gw.settings.task_timeout_s)


# -- a plan waiting for approval -------------------------------------------------------------------


def task_span(state: TaskState) -> str | None:
    """Where a wait's span goes: under the task's own span (its round's), else the task's trace."""
    return state.workflow_span.traceparent if state.workflow_span is not None else state.trace_parent


def _not_awaiting(state: TaskState) -> ControlError:
    decided = state.approval.decision if state.approval is not None else None
    why = f"its plan was {decided}" if decided else "nobody was asked to approve its plan"
    return ControlError(409, f"task {state.id} is not awaiting approval: it is {state.status.value} ({why})")


async def approve(gw: Gateway, principal: Principal, task_id: str, plan: dict[str, Any] | None = None) -> Mutation[float]:
    """Run the plan that waits for approval, or `plan` instead (validated like Jason's, strictly:
    `InvalidPlan` names every problem). The mutation's value is how long the plan waited (s)."""

    def change(state: TaskState) -> float:
        approval = state.approval
        if state.status != TaskStatus.AWAITING_APPROVAL or approval is None:
            if approval is not None and approval.decision == "approved" and state.status == TaskStatus.EXECUTING:
                raise Unchanged(-1.0)  # approved already: 409, after the nudge below
            raise _not_awaiting(state)
        edited = None
        if plan is not None:
            try:
                edited = parse_plan(plan, gw.registry, gw.settings.max_subtasks, strict=True)
            except PlanError as bad:
                raise InvalidPlan(bad.problems) from None
            state.plan = edited.record()
            state.subtasks = edited.subtask_states()
        approval.decided_at = utcnow()
        approval.decision = "approved"
        approval.edited = edited is not None
        waited = approval.waited_s or 0.0
        what = f"with a plan of {len(state.subtasks)} subtask(s) edited by a person" if edited else "as Jason planned it"
        state.record(EventKind.PLAN_APPROVED, f"Plan approved {what} after {waited:.1f}s", data={"waited_s": waited, "edited": bool(edited)})
        state.set_status(TaskStatus.EXECUTING, "Executing the approved plan")
        return waited

    mutation = await change_task(gw, principal, task_id, change)
    state = mutation.state
    attributes = {telemetry.TASK_ID: task_id, "aether.round": state.round}
    if not mutation.changed:
        with telemetry.resume(state.trace_parent, "approve", attributes):
            await gw.runtime.publish(PlanReady(task_id=task_id, round=state.round), subjects.PLAN_READY)
        raise _not_awaiting(state)
    approval = state.approval
    assert approval is not None and approval.decided_at is not None
    telemetry.waited("wait for approval", task_span(state), approval.requested_at, approval.decided_at, attributes)
    with telemetry.resume(state.trace_parent, "approve", {**attributes, "aether.waited_s": mutation.value, "aether.plan.edited": approval.edited}):
        await gw.runtime.publish(PlanReady(task_id=task_id, round=state.round), subjects.PLAN_READY)
    await arm_deadline(gw, state)  # time spent waiting for a person does not count
    return mutation


async def reject(gw: Gateway, principal: Principal, task_id: str, reason: str | None) -> Mutation[float]:
    """End the task that waits for approval `cancelled`, with `reason`; nothing of it ran."""

    def change(state: TaskState) -> float:
        if reason is None or not reason.strip():
            raise ControlError(422, "reason: say why the plan is rejected (a non-empty string)")
        approval = state.approval
        if state.status != TaskStatus.AWAITING_APPROVAL or approval is None:
            if approval is not None and approval.decision == "rejected" and state.status == TaskStatus.CANCELLED:
                raise Unchanged(-1.0)
            raise _not_awaiting(state)
        approval.decided_at = utcnow()
        approval.decision = "rejected"
        approval.reason = reason.strip()
        stop_task(state, TaskStatus.CANCELLED, f"plan rejected: {approval.reason}")
        state.error = f"plan rejected: {approval.reason}"
        return approval.waited_s or 0.0

    mutation = await change_task(gw, principal, task_id, change)
    state = mutation.state
    attributes = {telemetry.TASK_ID: task_id, "aether.round": state.round}
    if mutation.changed:
        assert state.approval is not None
        telemetry.waited("wait for approval", task_span(state), state.approval.requested_at, state.approval.decided_at, attributes)
        attributes["aether.waited_s"] = mutation.value
    with telemetry.resume(state.trace_parent, "reject", attributes):
        await gw.runtime.publish(TaskFinished(task_id=task_id, status="cancelled", round=state.round), subjects.TASK_FINISHED)
    if not mutation.changed:
        raise _not_awaiting(state)
    return mutation


# -- an expert's question --------------------------------------------------------------------------


async def answer(gw: Gateway, principal: Principal, task_id: str, subtask_id: str, text: str | None) -> Mutation[float]:
    """Answer the subtask's open question: its expert goes on, on any agent of its type, with the
    answer as its `ask_user` call's result. The mutation's value is how long the question waited."""

    def change(state: TaskState) -> float:
        subtask = state.find_subtask(subtask_id)
        if subtask is None:
            raise ControlError(404, f"task '{task_id}' has no subtask '{subtask_id}'")
        if text is None or not text.strip():
            raise ControlError(422, "answer: give the answer to the question (a non-empty string)")
        if len(text) > MAX_ANSWER_CHARS:
            raise ControlError(422, f"answer: {len(text)} characters; at most {MAX_ANSWER_CHARS} are allowed")
        if state.status != TaskStatus.EXECUTING or subtask.status != SubtaskStatus.AWAITING_INPUT:
            if state.status == TaskStatus.EXECUTING and subtask.resuming and not subtask.queued and subtask.status == SubtaskStatus.PENDING:
                raise Unchanged(-1.0)  # answered, its resume not queued yet: 409 after the nudge
            raise _no_question(state, subtask_id)
        now = utcnow()
        subtask.answer = text.strip()
        subtask.answered_at = now
        waited = (now - subtask.asked_at).total_seconds() if subtask.asked_at else 0.0
        # Pending and not queued: the scheduler queues it again (a new dispatch), and the agent
        # that takes it continues the stored conversation.
        subtask.queued_at = None
        state.set_subtask_status(
            subtask, SubtaskStatus.PENDING, f"Subtask {subtask_id}: question {subtask.questions} answered after {waited:.1f}s; it resumes",
            data={"waited_s": waited, "question_no": subtask.questions},
        )
        return waited

    mutation = await change_task(gw, principal, task_id, change)
    state = mutation.state
    subtask = state.subtask(subtask_id)
    attributes = {telemetry.TASK_ID: task_id, telemetry.SUBTASK_ID: subtask_id, "aether.question.number": subtask.questions}
    if mutation.changed:
        telemetry.waited("wait for an answer", task_span(state), subtask.asked_at, subtask.answered_at, attributes)
        attributes["aether.waited_s"] = mutation.value
    with telemetry.resume(state.trace_parent, "answer", attributes):
        await gw.runtime.publish(
            PlanReady(task_id=task_id, round=state.round, answered=f"{subtask_id}:{subtask.questions}"), subjects.PLAN_READY
        )
    if not mutation.changed:
        raise _no_question(state, subtask_id)
    await arm_deadline(gw, state)  # time spent waiting for a person does not count
    return mutation


def _no_question(state: TaskState, subtask_id: str) -> ControlError:
    subtask = state.subtask(subtask_id)
    if subtask.answered_at is not None and subtask.question is not None:
        why = f"its question {subtask.questions} was answered at {subtask.answered_at:%Y-%m-%d %H:%M:%S}Z"
    else:
        why = "its expert asked nothing"
    return ControlError(409, f"subtask '{subtask_id}' has no open question: it is {subtask.status.value} ({why})")
