"""The REST API's bodies. Field names follow the seed's Phase 1 API, which clients rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, StringConstraints

from aether_contracts.agents import AgentStatus
from aether_contracts.events import ToolStep
from aether_contracts.state import (
    Approval,
    EventKind,
    PlanRecord,
    SubtaskStatus,
    TaskEvent,
    TaskState,
    TaskStatus,
    Usage,
    Verification,
)
from aether_contracts.waiting import MAX_ANSWER_CHARS, MAX_REASON_CHARS
from aether_contracts.workspace import PathConflict, RefusedFile, RepositoryInfo, WorkspaceFile


class TaskSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: StrictStr = Field(
        ..., description="The coding task, in plain language.", examples=["Build a REST API for users"]
    )
    master_deployment_id: StrictStr | None = Field(
        None, description="The master agent that plans and synthesizes; default `jason`."
    )
    require_plan_approval: StrictBool = Field(
        False,
        description="Wait after planning, `awaiting_approval`, until a person approves the plan "
        "(`POST …/approve`, as it is or edited) or rejects it; nothing runs meanwhile.",
    )


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: dict[str, Any] | None = Field(
        None,
        description="A plan of your own instead of Jason's (`{analysis, subtasks: [{id, description, "
        "agent_type, depends_on, verify}]}`), validated as Jason's is: every problem is named in a 422.",
    )


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Required and not blank, in the schema too (a client reading it knows an empty one is refused).
    reason: Annotated[
        StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON_CHARS, pattern=r"\S")
    ] = Field(description="Why the plan is rejected: the task ends `cancelled` with it.")


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: Annotated[
        StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ANSWER_CHARS, pattern=r"\S")
    ] = Field(description="The answer to the subtask's open question; its expert reads it and goes on.")


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subtask_ids: list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        None, description="Failed subtasks to retry; default every one that failed itself."
    )
    replan: bool = Field(
        False, description="Ask Jason for a replacement sub-plan of each, instead of running it again."
    )


class Progress(BaseModel):
    total: int
    completed: int
    failed: int
    running: int
    pending: int


class SubtaskBody(BaseModel):
    id: str
    description: str
    agent_type: str
    status: SubtaskStatus
    depends_on: list[str]
    result: str | None = None
    error: str | None = None
    blocked_by: list[str] = []
    retryable: bool = False
    replan_pending: bool = False
    replans: int = 0
    replaced_by: list[str] = []
    agent_id: str | None = None
    attempts: int = 0
    model: str | None = None
    usage: Usage
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    files: list[WorkspaceFile] = []
    refused_files: list[RefusedFile] = []
    verify: list[str] = Field([], description="The checks that must pass for it to be completed.")
    steps: int = Field(0, description="Tool calls its expert made (the steps: `GET …/subtasks/{id}/steps`).")
    tool_errors: int = 0
    verification: Verification | None = None
    question: str | None = Field(
        None, description="The last question its expert asked; open while the status is `awaiting_input`."
    )
    asked_at: datetime | None = None
    answer: str | None = None
    answered_at: datetime | None = None
    questions: int = 0


class TaskEventBody(BaseModel):
    """One entry of a task's history, as streamed; `seq` is gap-free per task."""

    task_id: str
    seq: int
    at: datetime
    kind: str = Field(
        ...,
        examples=["subtask.status"],
        description="What the entry records: " + ", ".join(f"`{k.value}`" for k in EventKind)
        + " (a client should accept kinds it does not know).",
    )
    message: str
    level: Literal["info", "warning", "error"]
    subtask_id: str | None = None
    status: str | None = Field(None, description="The task's or subtask's new status, if it changed.")
    data: dict[str, Any] | None = None
    log: str = Field(..., description="The same entry as a line of the task's `logs`.")


class TaskStateBody(BaseModel):
    """A task without its history (the live streams send the history as separate events)."""

    id: str
    description: str
    status: TaskStatus
    master_deployment_id: str
    subtasks: list[SubtaskBody]
    plan: PlanRecord | None = None
    final_result: str | None = None
    error: str | None = None
    usage: Usage
    progress: Progress
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    round: int = Field(1, description="1, plus one for every retry or replan.")
    trace_id: str | None = Field(
        None,
        description="The task's OpenTelemetry trace id; null when tracing is off. In Jaeger at "
        "`{jaeger_url}/trace/{trace_id}` (`GET /api/config`).",
    )
    conflicts: list[PathConflict] = []
    repository: RepositoryInfo | None = None
    verification: Verification | None = Field(
        None, description="Whether every subtask's checks pass on the task's final repository."
    )
    approval: Approval | None = Field(
        None, description="Set when the plan waits (or waited) for a person's approval before it runs."
    )
    open_questions: int = Field(0, description="Subtasks whose expert asked a question that waits for a person's answer.")
    revision: int = Field(..., description="KV revision of this state; grows with every change.")
    last_seq: int = Field(0, description="`seq` of the task's latest event.")


class TaskBody(TaskStateBody):
    logs: list[str]


class TaskSummary(BaseModel):
    id: str
    description: str
    status: TaskStatus
    master_deployment_id: str
    progress: Progress
    usage: Usage
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    open_questions: int = Field(0, description="Subtasks whose expert asked a question that waits for a person's answer.")
    revision: int
    last_event: TaskEventBody | None = Field(None, description="The task's latest event.")


class AgentTemplateBody(BaseModel):
    type: str
    name: str
    description: str
    tags: list[str]
    builtin: bool


class AgentBody(BaseModel):
    id: str
    name: str
    role: str
    agent_type: str
    backend: str
    runtime_id: str | None = None
    host: str | None = None
    status: AgentStatus
    started_at: datetime
    last_seen: datetime
    idle_since: datetime | None = None
    current_task: str | None = None
    current_subtask: str | None = None
    subtasks_done: int = 0
    error: str | None = None
    deletable: bool
    alive: bool


class AgentStopBody(BaseModel):
    id: str
    status: AgentStatus
    detail: str = ""


class ServiceHealth(BaseModel):
    ok: bool
    instances: list[dict[str, Any]] = []


class HealthBody(BaseModel):
    status: str
    nats: bool
    kv: bool
    services: dict[str, ServiceHealth]


class ClientConfig(BaseModel):
    jaeger_url: str | None = Field(
        None,
        description="Jaeger UI base URL; a task's trace is at `{jaeger_url}/trace/{trace_id}`.",
    )


class ErrorBody(BaseModel):
    detail: Any


def progress_of(state: TaskState) -> Progress:
    counts = {status: 0 for status in SubtaskStatus}
    for subtask in state.subtasks:
        counts[subtask.status] += 1
    return Progress(
        total=len(state.subtasks),
        completed=counts[SubtaskStatus.COMPLETED],
        failed=counts[SubtaskStatus.FAILED] + counts[SubtaskStatus.CANCELLED],
        running=counts[SubtaskStatus.EXECUTING] + counts[SubtaskStatus.CREATING_AGENT],
        pending=counts[SubtaskStatus.PENDING],
    )


def open_questions(state: TaskState) -> int:
    return sum(s.status == SubtaskStatus.AWAITING_INPUT for s in state.subtasks)


def event_body(task_id: str, event: TaskEvent) -> TaskEventBody:
    return TaskEventBody(task_id=task_id, **event.model_dump(), log=event.log_line())


def task_body(state: TaskState, revision: int) -> TaskBody:
    return TaskBody(**_state_fields(state, revision), logs=state.logs)


def task_state_body(state: TaskState, revision: int) -> TaskStateBody:
    return TaskStateBody(**_state_fields(state, revision))


def _state_fields(state: TaskState, revision: int) -> dict[str, Any]:
    return dict(
        id=state.id,
        description=state.description,
        status=state.status,
        master_deployment_id=state.master_id,
        subtasks=[
            SubtaskBody(**s.model_dump(exclude={"dispatches", "conversation"}), duration_ms=s.duration_ms)
            for s in state.subtasks
        ],
        plan=state.plan,
        final_result=state.final_result,
        error=state.error,
        usage=state.usage,
        progress=progress_of(state),
        created_at=state.created_at,
        updated_at=state.updated_at,
        completed_at=state.completed_at,
        trace_id=state.trace_id,
        round=state.round,
        conflicts=state.conflicts,
        repository=state.repository,
        verification=state.verification,
        approval=state.approval,
        open_questions=open_questions(state),
        revision=revision,
        last_seq=state.events[-1].seq if state.events else 0,
    )


SUMMARY_DESCRIPTION_CHARS = 280


def task_summary(state: TaskState, revision: int) -> TaskSummary:
    description = state.description
    if len(description) > SUMMARY_DESCRIPTION_CHARS:
        description = description[: SUMMARY_DESCRIPTION_CHARS - 1] + "…"
    return TaskSummary(
        id=state.id,
        description=description,
        status=state.status,
        master_deployment_id=state.master_id,
        progress=progress_of(state),
        usage=state.usage,
        error=state.error,
        created_at=state.created_at,
        updated_at=state.updated_at,
        completed_at=state.completed_at,
        open_questions=open_questions(state),
        revision=revision,
        last_event=event_body(state.id, state.events[-1]) if state.events else None,
    )


# -- live streams ---------------------------------------------------------------------------------
# Over WebSocket every message is one JSON text frame `{type, id, data}`; over Server-Sent Events
# `type` is the `event:` field, `id` the `id:` field (what `Last-Event-ID` echoes) and `data` the
# `data:` field. A message without an id does not move the client's resume position.


class TaskEnd(BaseModel):
    task_id: str
    status: TaskStatus
    last_seq: int = Field(..., description="`seq` of the task's last event.")


class BoardRemoved(BaseModel):
    id: str
    revision: int


class BoardReady(BaseModel):
    revision: int = Field(..., description="Resume position after the backlog that was just sent.")


class StreamError(BaseModel):
    status: int
    detail: str


class TaskEventMessage(BaseModel):
    type: Literal["task.event"] = "task.event"
    id: str = Field(..., description="The event's `seq`: resume after it with `?after=` or `Last-Event-ID`.")
    data: TaskEventBody


class TaskStateMessage(BaseModel):
    type: Literal["task.state"] = "task.state"
    id: None = None
    data: TaskStateBody


class TaskStepMessage(BaseModel):
    """An expert's tool call (or one of its checks) as it happens. Not part of the resume: after a
    reconnect, `GET …/subtasks/{id}/steps` has every step."""

    type: Literal["task.step"] = "task.step"
    id: None = None
    data: ToolStep


class TaskEndMessage(BaseModel):
    type: Literal["task.end"] = "task.end"
    id: None = None
    data: TaskEnd


class BoardTaskMessage(BaseModel):
    type: Literal["board.task"] = "board.task"
    id: str = Field(..., description="The KV revision: resume after it with `?after=` or `Last-Event-ID`.")
    data: TaskSummary


class BoardRemovedMessage(BaseModel):
    type: Literal["board.removed"] = "board.removed"
    id: str
    data: BoardRemoved


class BoardReadyMessage(BaseModel):
    type: Literal["board.ready"] = "board.ready"
    id: str = Field(..., description="The resume position after the backlog.")
    data: BoardReady


class StreamErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    id: None = None
    data: StreamError


STREAM_MESSAGES: tuple[type[BaseModel], ...] = (
    TaskEventMessage,
    TaskStateMessage,
    TaskStepMessage,
    TaskEndMessage,
    BoardTaskMessage,
    BoardRemovedMessage,
    BoardReadyMessage,
    StreamErrorMessage,
)
