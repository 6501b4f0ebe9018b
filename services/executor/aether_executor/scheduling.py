"""Deciding what runs next. Pure functions over a TaskState; no broker, no I/O.

A subtask is dispatched the moment its own dependencies are complete, not when its "level" is:
`queue_ready` is called after every single completion. A failed subtask fails the subtasks that
depend on it (transitively) without running them, and blocks nothing else — unless Jason is
asked for a replacement sub-plan (a replan), during which its dependents wait.

Each function returns a `Decision` naming the events to publish. When the state already reflects
the event (a redelivery), the function raises `Unchanged(decision)` with the events that may not
have gone out the first time; republishing them is harmless because every event carries a
deduplication id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aether_contracts.events import SubtaskFinished, TaskExpired
from aether_contracts.state import EventKind, Subtask, SubtaskStatus, TaskState, TaskStatus, utcnow
from aether_core import dag
from aether_core.control import stop_task
from aether_core.store import Unchanged
from aether_core.workspace import record_subtask_files

HasAgent = Callable[[str], bool]
"""Whether a live agent serves an agent type; without one a queued subtask is `creating_agent`."""


def _any_agent(agent_type: str) -> bool:
    return True


@dataclass(frozen=True)
class Policy:
    has_agent: HasAgent = _any_agent
    auto_replan: bool = False
    """Ask Jason once for a replacement when a subtask fails for a reason retrying cannot fix."""
    token_budget: int | None = None
    """Tokens a task may spend; past it no new subtask starts and the task is synthesized."""


DEFAULT = Policy()


@dataclass
class Decision:
    ready: list[Subtask] = field(default_factory=list)
    synthesize: bool = False
    finished: TaskStatus | None = None
    replan: list[str] = field(default_factory=list)
    cancel: str | None = None
    """Broadcast a stop for work still running on this task, with this reason."""
    postpone: float | None = None
    """Arm the task's deadline again this many seconds from now (it fired while a person was asked)."""

    @property
    def empty(self) -> bool:
        return not (self.ready or self.synthesize or self.finished or self.replan or self.cancel or self.postpone)


def queue_ready(state: TaskState, has_agent: HasAgent = _any_agent) -> list[Subtask]:
    """Mark every pending subtask whose dependencies all completed as queued; return them."""
    completed = {s.id for s in state.subtasks if s.status == SubtaskStatus.COMPLETED}
    now = utcnow()
    ready = []
    for subtask in state.subtasks:
        if subtask.status != SubtaskStatus.PENDING or subtask.queued_at is not None:
            continue
        if all(dep in completed for dep in subtask.depends_on):
            subtask.queued_at = now
            subtask.dispatches += 1
            if has_agent(subtask.agent_type):
                state.record(
                    EventKind.SUBTASK_QUEUED,
                    f"Subtask {subtask.id} queued for a {subtask.agent_type} agent",
                    subtask_id=subtask.id,
                    status=subtask.status.value,
                )
            else:
                state.set_subtask_status(
                    subtask,
                    SubtaskStatus.CREATING_AGENT,
                    f"Subtask {subtask.id} queued; waiting for a {subtask.agent_type} agent to start",
                )
            ready.append(subtask)
    return ready


def dependents(state: TaskState, subtask_id: str) -> list[Subtask]:
    """Every subtask that depends on `subtask_id`, directly or through others, in plan order."""
    return dag.dependents(state.subtasks, [subtask_id])


def block_dependents(state: TaskState, failed: Subtask) -> None:
    for subtask in dependents(state, failed.id):
        if subtask.status.terminal or subtask.status == SubtaskStatus.EXECUTING:
            continue
        subtask.blocked_by = sorted({*subtask.blocked_by, failed.id})
        subtask.error = f"not run: it depends on {failed.id}, which failed"
        subtask.completed_at = utcnow()
        state.set_subtask_status(subtask, SubtaskStatus.FAILED, f"Subtask {subtask.id} {subtask.error}", level="warning")


def enforce_budget(state: TaskState, budget: int | None, *, left_too_little: bool = False) -> bool:
    """Past the token budget (or with what it leaves too little for a call: an agent said so),
    cancel what has not started; True if the budget is spent."""
    if budget is None or (state.usage.total_tokens < budget and not left_too_little):
        return False
    reason = f"the task's token budget of {budget} is spent ({state.usage.total_tokens} used)"
    now = utcnow()
    for subtask in state.subtasks:
        if subtask.status in (SubtaskStatus.PENDING, SubtaskStatus.CREATING_AGENT) or subtask.replan_pending:
            subtask.replan_pending = False
            subtask.error = f"not run: {reason}"
            subtask.completed_at = now
            state.set_subtask_status(subtask, SubtaskStatus.CANCELLED, f"Subtask {subtask.id} {subtask.error}", level="warning")
    return True


def settle_if_done(state: TaskState) -> Decision:
    """When every subtask is settled: synthesize if any succeeded, else fail the task."""
    if not state.subtasks or not all(s.settled for s in state.subtasks):
        return Decision()
    succeeded = [s for s in state.subtasks if s.status == SubtaskStatus.COMPLETED]
    if succeeded:
        missing = [s for s in state.subtasks if s.status != SubtaskStatus.COMPLETED and not s.replaced_by]
        note = f" ({len(missing)} did not complete: the synthesis will say what is missing)" if missing else ""
        state.set_status(TaskStatus.SYNTHESIZING, f"All subtasks finished{note}; Jason is synthesizing")
        return Decision(synthesize=True)
    state.error = "no subtask succeeded: " + "; ".join(
        f"{s.id}: {s.error or 'failed'}" for s in state.subtasks if not s.blocked_by
    )
    state.set_status(TaskStatus.FAILED, f"Task failed: {state.error}", level="error")
    return Decision(finished=TaskStatus.FAILED)


def reconcile(state: TaskState, policy: Policy = DEFAULT) -> Decision:
    """`plan.ready` (a new plan, a retry, a replan): fail what cannot run, dispatch what can."""
    if state.status != TaskStatus.EXECUTING:
        raise Unchanged(_replay(state))
    events_before = len(state.events)
    for subtask in state.subtasks:
        if subtask.status in (SubtaskStatus.FAILED, SubtaskStatus.CANCELLED) and subtask.settled and not subtask.replaced_by:
            block_dependents(state, subtask)
    spent = enforce_budget(state, policy.token_budget)
    ready = [] if spent else queue_ready(state, policy.has_agent)
    decision = settle_if_done(state)
    decision.ready = ready
    if len(state.events) == events_before:
        raise Unchanged(_replay(state))
    return decision


start_plan = reconcile


def finish_subtask(state: TaskState, event: SubtaskFinished, policy: Policy = DEFAULT) -> Decision:
    """`subtask.finished`: record the outcome, dispatch what became ready, settle the task."""
    subtask = state.find_subtask(event.subtask_id)
    if subtask is None or state.status != TaskStatus.EXECUTING:
        raise Unchanged(_replay(state))
    if subtask.status.terminal or event.dispatch != subtask.dispatches:
        raise Unchanged(_replay(state))  # recorded already, or a stale run of an earlier dispatch

    subtask.completed_at = event.finished_at
    subtask.started_at = subtask.started_at or event.started_at
    subtask.agent_id = event.agent_id or subtask.agent_id
    subtask.model = event.model
    subtask.usage.add(event.usage)
    state.usage.add(event.usage)
    subtask.steps, subtask.tool_errors, subtask.verification = event.steps, event.tool_errors, event.verification
    subtask.conversation = None  # a paused conversation, if it had one, is done with
    decision = Decision()
    if event.outcome == "completed":
        subtask.result = event.result
        subtask.error = None
        state.set_subtask_status(
            subtask,
            SubtaskStatus.COMPLETED,
            f"Subtask {subtask.id} completed by {event.agent_id or 'an agent'}"
            + (f" in {subtask.duration_ms / 1000:.1f}s" if subtask.duration_ms is not None else ""),
            data={"usage": event.usage.model_dump(), "duration_ms": subtask.duration_ms},
        )
        record_subtask_files(state, subtask, event.files, event.refused_files)
    elif event.budget_spent:
        # The budget left too little for its call: the task stops politely, as when it is spent.
        subtask.error = f"not run: {event.error}"
        state.set_subtask_status(subtask, SubtaskStatus.CANCELLED, f"Subtask {subtask.id} {subtask.error}", level="warning")
        enforce_budget(state, policy.token_budget or state.usage.total_tokens, left_too_little=True)
    else:
        subtask.error = event.error or "failed"
        subtask.retryable = event.retryable
        state.set_subtask_status(
            subtask, SubtaskStatus.FAILED, f"Subtask {subtask.id} failed: {subtask.error}", level="error"
        )
        # Once: neither a subtask replanned before nor a replacement is replanned on its own.
        if policy.auto_replan and not event.retryable and not subtask.replans and subtask.replacement_of is None:
            subtask.replan_pending = True
            decision.replan.append(subtask.id)
            state.record(
                EventKind.SUBTASK_REPLAN,
                f"Subtask {subtask.id} failed for a reason retrying cannot fix; Jason is asked for a replacement plan",
                subtask_id=subtask.id,
            )
        else:
            block_dependents(state, subtask)
    if not enforce_budget(state, policy.token_budget, left_too_little=event.budget_spent):
        decision.ready = queue_ready(state, policy.has_agent)
    settled = settle_if_done(state)
    decision.synthesize, decision.finished = settled.synthesize, settled.finished
    return decision


def expire(state: TaskState, timeout_s: float, round_: int = 1) -> Decision:
    """The task's deadline passed: fail it and stop whatever still runs. While a person is asked
    (a plan to approve, a question to answer), the wait has its own deadline: the task's is
    postponed instead (and armed afresh when the person answers)."""
    if state.status.terminal or round_ != state.round:
        raise Unchanged(Decision())
    if waiting_for_person(state):
        raise Unchanged(Decision(postpone=timeout_s))
    reason = f"timed out: the task did not finish within {timeout_s:.0f}s"
    stop_task(state, TaskStatus.FAILED, reason)
    return Decision(finished=TaskStatus.FAILED, cancel=reason)


def waiting_for_person(state: TaskState) -> bool:
    return state.status == TaskStatus.AWAITING_APPROVAL or any(
        s.status == SubtaskStatus.AWAITING_INPUT for s in state.subtasks
    )


def deadline_passed(state: TaskState, event: TaskExpired, policy: Policy = DEFAULT) -> Decision:
    """A deadline schedule fired: the task's, a plan's approval's or a question's (issue 15). One
    whose wait has ended since (approved, answered, a later round) changes nothing."""
    if event.waiting == "approval":
        return expire_approval(state, event.timeout_s, event.round)
    if event.waiting == "question":
        return expire_question(state, event, policy)
    return expire(state, event.timeout_s, event.round)


def expire_approval(state: TaskState, timeout_s: float, round_: int) -> Decision:
    approval = state.approval
    if state.status != TaskStatus.AWAITING_APPROVAL or approval is None or round_ != state.round:
        raise Unchanged(Decision())
    reason = f"no one approved its plan within {timeout_s:.0f}s (AETHER_APPROVAL_TIMEOUT_S)"
    approval.decision = "expired"
    approval.decided_at = utcnow()
    approval.reason = reason
    stop_task(state, TaskStatus.FAILED, reason)
    return Decision(finished=TaskStatus.FAILED)


def expire_question(state: TaskState, event: TaskExpired, policy: Policy = DEFAULT) -> Decision:
    """No answer in time: the subtask fails with the reason (its dependents with it), the rest
    of the task goes on."""
    subtask = state.find_subtask(event.subtask_id or "")
    if (
        subtask is None
        or state.status != TaskStatus.EXECUTING
        or subtask.status != SubtaskStatus.AWAITING_INPUT
        or subtask.questions != event.question_no
    ):
        raise Unchanged(Decision())
    subtask.error = (
        f"its question was not answered within {event.timeout_s:.0f}s (AETHER_QUESTION_TIMEOUT_S): {subtask.question}"
    )
    subtask.completed_at = utcnow()
    subtask.conversation = None
    state.set_subtask_status(subtask, SubtaskStatus.FAILED, f"Subtask {subtask.id} failed: {subtask.error}", level="error")
    block_dependents(state, subtask)
    decision = Decision()
    if not enforce_budget(state, policy.token_budget):
        decision.ready = queue_ready(state, policy.has_agent)
    settled = settle_if_done(state)
    decision.synthesize, decision.finished = settled.synthesize, settled.finished
    return decision


def _replay(state: TaskState) -> Decision:
    """The events a previous, interrupted handling of this state may not have published."""
    if state.status == TaskStatus.EXECUTING:
        return Decision(
            ready=[s for s in state.subtasks if s.queued],
            replan=[s.id for s in state.subtasks if s.replan_pending],
        )
    if state.status == TaskStatus.SYNTHESIZING:
        return Decision(synthesize=True)
    return Decision()
