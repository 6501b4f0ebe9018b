"""Stopping and retrying tasks: pure changes of a TaskState, shared by the gateway (cancel, retry)
and the scheduler (deadlines, token budgets). No broker in here."""

from __future__ import annotations

from aether_contracts.state import EventKind, Subtask, SubtaskStatus, TaskState, TaskStatus, utcnow

from . import dag


class ControlError(Exception):
    """A request that the task's state does not allow; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def stop_task(state: TaskState, status: TaskStatus, reason: str) -> None:
    """End a task now: every subtask not finished is cancelled; nothing else will be recorded."""
    if state.status.terminal:
        raise ControlError(409, f"task {state.id} is already {state.status.value}")
    now = utcnow()
    for subtask in state.subtasks:
        subtask.replan_pending = False
        if subtask.status.terminal:
            continue
        subtask.error = reason
        subtask.completed_at = now
        state.set_subtask_status(
            subtask, SubtaskStatus.CANCELLED, f"Subtask {subtask.id} cancelled: {reason}", level="warning"
        )
    if status == TaskStatus.FAILED:
        state.error = reason
    state.set_status(status, f"Task {status.value}: {reason}", level="warning" if status == TaskStatus.CANCELLED else "error")


def retryable_subtasks(state: TaskState) -> list[Subtask]:
    """Subtasks that failed (or were cancelled) themselves, not because a dependency did."""
    return [
        s
        for s in state.subtasks
        if s.status in (SubtaskStatus.FAILED, SubtaskStatus.CANCELLED) and not s.blocked_by and not s.replaced_by
    ]


def select_retry(state: TaskState, subtask_ids: list[str] | None) -> list[Subtask]:
    if not state.status.terminal:
        raise ControlError(409, f"task {state.id} is still {state.status.value}; retry it once it has ended")
    if state.approval is not None and state.approval.decision in ("rejected", "expired"):
        # A retry would run a plan no person approved (issue 15).
        raise ControlError(409, f"task {state.id}'s plan was {state.approval.decision}, never approved: submit the task again")
    candidates = {s.id: s for s in retryable_subtasks(state)}
    if subtask_ids is None:
        return list(candidates.values())
    known = {s.id: s for s in state.subtasks}
    unknown = [i for i in subtask_ids if i not in known]
    if unknown:
        raise ControlError(404, f"task {state.id} has no subtask {', '.join(repr(i) for i in unknown)}")
    refused = []
    for subtask_id in subtask_ids:
        if subtask_id in candidates:
            continue
        subtask = known[subtask_id]
        if subtask.status == SubtaskStatus.COMPLETED:
            refused.append(f"'{subtask_id}' completed")
        elif subtask.replaced_by:
            refused.append(f"'{subtask_id}' was replaced by {', '.join(subtask.replaced_by)}")
        else:
            refused.append(f"'{subtask_id}' never ran (retry {', '.join(subtask.blocked_by)}, it runs again with them)")
    if refused:
        raise ControlError(409, "cannot retry " + "; ".join(refused))
    return [candidates[i] for i in subtask_ids]


def prepare_retry(state: TaskState, selected: list[Subtask], *, replan: bool) -> list[str]:
    """Reset the selected subtasks and the dependents that never ran; keep every finished result.

    With `replan`, the selected subtasks stay failed and wait for Jason's replacement sub-plans;
    their dependents wait with them. Returns the ids that will run (or be replanned).
    """
    if not selected:
        raise ControlError(409, f"task {state.id} has no failed or cancelled subtask to retry")
    roots = {s.id for s in selected}
    reset = [*selected, *(d for d in dag.dependents(state.subtasks, roots) if d.status != SubtaskStatus.COMPLETED)]
    state.round += 1
    for subtask in reset:
        if replan and subtask.id in roots:
            subtask.replan_pending = True
            state.record(
                EventKind.SUBTASK_REPLAN,
                f"Subtask {subtask.id}: Jason is asked for a replacement plan",
                subtask_id=subtask.id,
            )
            continue
        subtask.result = subtask.error = None
        subtask.blocked_by = []
        subtask.queued_at = subtask.started_at = subtask.completed_at = None
        subtask.agent_id = None
        subtask.retryable = False
        subtask.replan_pending = False
        subtask.conversation = None  # a question it asked is asked again, if the new run needs it
        state.set_subtask_status(subtask, SubtaskStatus.PENDING, f"Subtask {subtask.id} will run again")
    state.final_result = None
    state.error = None
    state.completed_at = None
    state.synthesis_attempts = 0
    what = "replanning" if replan else "retrying"
    state.set_status(TaskStatus.EXECUTING, f"Task resumed (round {state.round}): {what} {', '.join(sorted(roots))}")
    return [s.id for s in reset]


def prepare_replan_from_scratch(state: TaskState) -> None:
    """A task that failed before it had a plan is planned again."""
    if not state.status.terminal:
        raise ControlError(409, f"task {state.id} is still {state.status.value}; retry it once it has ended")
    state.round += 1
    state.error = None
    state.completed_at = None
    state.plan = None
    state.set_status(TaskStatus.PENDING, f"Task resumed (round {state.round}): planning again")
