"""Deadlines as NATS message schedules: NATS itself publishes `task.expired` when one passes, so
no sweeper has to be alive for a task to end. One schedule per holding subject (a new one
replaces it), and each body names what it is the deadline of (the task's round, the question's
number): a deadline that fires after its wait ended is recognised by the scheduler and ignored.

- the task's (`AETHER_TASK_TIMEOUT_S`): armed at creation, again at each retry, approval and
  answer (time waiting for a person does not count), and postponed when it fires while a person
  is asked;
- a plan's approval (`AETHER_APPROVAL_TIMEOUT_S`, from when the plan was ready);
- an expert's question (`AETHER_QUESTION_TIMEOUT_S`, from when it was asked).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aether_contracts import subjects
from aether_contracts.events import TaskExpired
from aether_contracts.state import TaskState, utcnow

from .service import Runtime


async def arm_task(runtime: Runtime, state: TaskState, timeout_s: float, *, at: datetime | None = None) -> None:
    await runtime.schedule(
        TaskExpired(task_id=state.id, timeout_s=timeout_s, round=state.round),
        subjects.deadline(state.id),
        at=at or utcnow() + timedelta(seconds=timeout_s),
        target=subjects.TASK_EXPIRED,
    )


async def arm_approval(runtime: Runtime, state: TaskState) -> None:
    """From when the plan was ready, so arming it again (a redelivery) changes nothing."""
    approval = state.approval
    assert approval is not None and approval.requested_at is not None
    await runtime.schedule(
        TaskExpired(task_id=state.id, timeout_s=approval.timeout_s, round=state.round, waiting="approval"),
        subjects.approval_deadline(state.id),
        at=approval.requested_at + timedelta(seconds=approval.timeout_s),
        target=subjects.TASK_EXPIRED,
    )


async def arm_question(
    runtime: Runtime, state: TaskState, subtask_id: str, question_no: int, timeout_s: float, asked_at: datetime
) -> None:
    await runtime.schedule(
        TaskExpired(
            task_id=state.id, timeout_s=timeout_s, round=state.round, waiting="question",
            subtask_id=subtask_id, question_no=question_no,
        ),
        subjects.question_deadline(state.id, subtask_id),
        at=asked_at + timedelta(seconds=timeout_s),
        target=subjects.TASK_EXPIRED,
    )
