"""The shape of task state, as stored in the `tasks` KV bucket (key = task id).

Status names are the seed's (phase 1) plus `cancelled` for both tasks and subtasks. A subtask that
never ran because a dependency failed is `failed` with `blocked_by` naming the dependencies, so
clients that know only the seed's statuses still read it right. Two statuses wait for a person
(issue 15): a task `awaiting_approval` (its plan is there, nothing runs) and a subtask
`awaiting_input` (its expert asked a question; the task stays `executing`). Neither is terminal.

Every change to a task is a compare-and-set on the entry's revision (see aether_core.store); the
methods here only mutate the model in memory and must stay deterministic, because a conflicting
writer re-runs them on a fresh copy.

A subtask id names one subtask: events, dependencies and agents find a subtask by it, so a second
subtask with the same id is never run (issue 19, finding 6). A state is checked when it is built
and, because mutations change it in place, by the store before every write (`check`).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, model_validator

from .workspace import PathConflict, RefusedFile, RepositoryInfo, WorkspaceFile

SCHEMA_VERSION = 1
STORED = "stored"
"""Validation context of a state read back from the store (see `TaskState.from_bytes`)."""


class InvalidTaskState(ValueError):
    """A task state that breaks an invariant of the model (two subtasks with one id)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskStatus(StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    """Planned; nothing runs until a person approves the plan (or rejects it)."""
    EXECUTING = "executing"
    SYNTHESIZING = "synthesizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class SubtaskStatus(StrEnum):
    PENDING = "pending"
    CREATING_AGENT = "creating_agent"
    EXECUTING = "executing"
    AWAITING_INPUT = "awaiting_input"
    """Its expert asked a person a question (`Subtask.question`); no agent holds it meanwhile."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (SubtaskStatus.COMPLETED, SubtaskStatus.FAILED, SubtaskStatus.CANCELLED)


class EventKind(StrEnum):
    """What a task's history entry (`TaskEvent.kind`) records; clients filter on these values."""

    TASK_CREATED = "task.created"
    TASK_STATUS = "task.status"
    """The task's status changed (`TaskEvent.status` holds the new one)."""
    TASK_REPLANNING = "task.replanning"
    TASK_VERIFIED = "task.verified"
    TASK_UNVERIFIED = "task.unverified"
    TASK_FIXUP = "task.fixup"
    """Jason's fix-up after a failed check of the whole repository."""
    PLAN_READY = "plan.ready"
    PLAN_REPAIRED = "plan.repaired"
    PLAN_NOTE = "plan.note"
    PLAN_FALLBACK = "plan.fallback"
    """No usable plan from the LLM: the keyword plan was used."""
    PLAN_APPROVED = "plan.approved"
    SUBTASK_STATUS = "subtask.status"
    SUBTASK_QUEUED = "subtask.queued"
    SUBTASK_REPLAN = "subtask.replan"
    SUBTASK_REPLANNED = "subtask.replanned"
    SUBTASK_REPLAN_FAILED = "subtask.replan_failed"
    WORKSPACE_FILES = "workspace.files"
    WORKSPACE_CONFLICT = "workspace.conflict"
    WORKSPACE_REFUSED = "workspace.refused"
    WORKSPACE_SKIPPED = "workspace.skipped"
    REPOSITORY_ASSEMBLED = "repository.assembled"
    REPOSITORY_FAILED = "repository.failed"
    SYNTHESIS_STARTED = "synthesis.started"
    SYNTHESIS_FALLBACK = "synthesis.fallback"
    LLM_RETRY = "llm.retry"
    LLM_NOTE = "llm.note"


class Usage(BaseModel):
    """Tokens and LLM requests, every attempt counted: failed, abandoned and retried ones too."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0
    estimated_tokens: int = 0
    """The part of `total_tokens` Aether estimated (about 4 characters a token) because the server
    never reported it: an attempt cut off by a cancel, a timeout or a failure mid-reply."""

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.calls += other.calls
        self.estimated_tokens += other.estimated_tokens


class CheckRun(BaseModel):
    """One check (a command from the plan's `verify`) as Aether ran it in the sandbox."""

    command: str
    passed: bool
    exit_code: int | None = None
    """None: it did not finish (timed out, or could not run: see `output`)."""
    output_tail: str = ""
    """The end of its output, bounded."""
    duration_ms: int = 0
    round: int = 1
    """Which attempt of the checks: 1 after the expert's loop, more after each fix round."""


class Verification(BaseModel):
    """Whether checks passed: a subtask's after its expert's work, a task's on its repository."""

    passed: bool
    checks: list[CheckRun] = Field(default_factory=list)
    """The last run of each check."""
    rounds: int = 0
    """How many times the checks ran (a failing run is followed by a fix round, bounded)."""
    note: str | None = None


class PlanItem(BaseModel):
    """A subtask as its plan states it (a `Subtask` adds what became of it)."""

    id: str
    description: str
    agent_type: str
    depends_on: list[str] = Field(default_factory=list)
    verify: list[str] = Field(default_factory=list)
    """Commands (run with `sh -c` in the sandbox, in the worktree) that must pass for the subtask
    to be completed; from the plan."""


class Subtask(PlanItem):
    status: SubtaskStatus = SubtaskStatus.PENDING
    result: str | None = None
    error: str | None = None
    blocked_by: list[str] = Field(default_factory=list)
    dispatches: int = 0
    """How many times the scheduler queued it; part of the dedup id of its ready event."""
    attempts: int = 0
    """How many times a worker started it (a redelivery after a crash adds one)."""
    retryable: bool = False
    """For a failure: whether running it again could help (a timeout) or not (a refusal)."""
    replan_pending: bool = False
    """Failed, and Jason is asked for a replacement: its dependents wait instead of failing."""
    replans: int = 0
    replaced_by: list[str] = Field(default_factory=list)
    """The subtasks of the sub-plan that replaced this failed one."""
    replacement_of: str | None = None
    """The failed subtask whose sub-plan this one belongs to (replacements are not replanned)."""
    agent_id: str | None = None
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    files: list[WorkspaceFile] = Field(default_factory=list)
    """The files its expert wrote (see aether_contracts.workspace)."""
    refused_files: list[RefusedFile] = Field(default_factory=list)
    steps: int = 0
    """Tool calls its expert made in its last run (the steps themselves are on the stream
    subject `aether.step.<task>.<subtask>`, not in this document)."""
    tool_errors: int = 0
    verification: Verification | None = None
    question: str | None = None
    """The last question its expert asked a person (`ask_user`); open while `awaiting_input`."""
    asked_at: datetime | None = None
    answer: str | None = None
    """The answer to `question`, once given (the expert reads it as the tool's result)."""
    answered_at: datetime | None = None
    questions: int = 0
    """Questions asked in all: numbers the open one (its deadline and its resume name it)."""
    conversation: str | None = None
    """While a question is open or its answer waits for an agent: the Object Store entry holding
    the expert's conversation so far (aether_contracts.waiting.PausedConversation), written once;
    any agent of the type resumes it. Kept out of the state, which stays small."""

    @property
    def resuming(self) -> bool:
        """Answered, and its expert's conversation waits for an agent to continue it."""
        return self.conversation is not None and self.answer is not None

    @property
    def settled(self) -> bool:
        """Terminal, and nothing more will come of it (no replacement being planned)."""
        return self.status.terminal and not self.replan_pending

    @property
    def queued(self) -> bool:
        """Dispatched and waiting for an agent (which may still be starting)."""
        waiting = (SubtaskStatus.PENDING, SubtaskStatus.CREATING_AGENT)
        return self.status in waiting and self.queued_at is not None

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return int((self.completed_at - self.started_at).total_seconds() * 1000)


EventLevel = Literal["info", "warning", "error"]


class TraceSpan(BaseModel):
    """A span that lasts as long as a task's round: its context is made when the round starts, so
    every service's spans can hang under it, and it is exported when the round ends, by whichever
    service ends it (aether_core.telemetry.end_workflow)."""

    traceparent: str
    """W3C `traceparent` of the span itself."""
    parent: str | None = None
    """`traceparent` of its parent (the `POST` that created the task, or the `retry`)."""
    started_at: datetime = Field(default_factory=utcnow)


class TaskEvent(BaseModel):
    """One entry of a task's history; `seq` is gap-free per task, so a client can resume."""

    seq: int
    at: datetime
    kind: str
    """An `EventKind` value; a str, so a history written by a newer version still reads."""
    message: str
    level: EventLevel = "info"
    subtask_id: str | None = None
    status: str | None = None
    data: dict[str, Any] | None = None

    def log_line(self) -> str:
        return f"[{self.at:%H:%M:%S}] [{self.level.upper()}] {self.message}"


class Approval(BaseModel):
    """A plan that waits for a person: asked for by the submission or the server's setting."""

    timeout_s: float
    """How long the plan may wait, from `requested_at`, before the task fails."""
    requested_at: datetime | None = None
    """When the plan was ready and the wait began."""
    decided_at: datetime | None = None
    decision: Literal["approved", "rejected", "expired"] | None = None
    edited: bool = False
    """Approved with a plan of the person's own (it replaced Jason's)."""
    reason: str | None = None
    """Why it was rejected (or that it expired)."""

    @property
    def waited_s(self) -> float | None:
        if self.requested_at is None or self.decided_at is None:
            return None
        return (self.decided_at - self.requested_at).total_seconds()


class PlanReplacement(BaseModel):
    """A failed subtask's replacement sub-plan, spliced into the plan in its place."""

    replaced: str
    analysis: str = ""
    subtasks: list[PlanItem] = Field(default_factory=list)


class PlanRecord(BaseModel):
    """The plan a task runs: Jason's, or a person's edited one (issue 17: a typed model, not a
    dict read by key in two services)."""

    analysis: str = ""
    subtasks: list[PlanItem] = Field(default_factory=list)
    replans: list[PlanReplacement] = Field(default_factory=list)


class TaskState(BaseModel):
    schema_version: int = SCHEMA_VERSION
    id: str
    description: str
    status: TaskStatus = TaskStatus.PENDING
    master_id: str = "jason"
    tenant: str | None = None
    round: int = 1
    """Bumped by every retry or replan; part of the dedup ids of the events it causes."""
    timeout_s: float | None = None
    plan: PlanRecord | None = None
    subtasks: list[Subtask] = Field(default_factory=list)
    final_result: str | None = None
    synthesis_attempts: int = 0
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    events: list[TaskEvent] = Field(default_factory=list)
    trace_id: str | None = None
    """The OpenTelemetry trace of the task (32 hex digits), set at creation when tracing is on."""
    trace_parent: str | None = None
    """W3C `traceparent` of the span that created the task: a retry or a cancel continues the
    task's trace from it, so one task stays one trace however many rounds it takes."""
    workflow_span: TraceSpan | None = None
    """The task's span (`invoke_workflow`) of the current round, which every service parents its
    spans on; None when the task is not traced."""
    synthesis_files: list[WorkspaceFile] = Field(default_factory=list)
    conflicts: list[PathConflict] = Field(default_factory=list)
    repository: RepositoryInfo | None = None
    verification: Verification | None = None
    """Every subtask's checks, run again on the assembled repository (by the synthesizer)."""
    fixups: int = 0
    """Fix-up subtasks added because the assembled repository failed its checks."""
    approval: Approval | None = None
    """Set when the plan must be approved by a person before anything runs (issue 15)."""
    question_timeout_s: float | None = None
    """How long a question of an expert may wait for its answer before the subtask fails."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None

    @model_validator(mode="after")
    def _subtask_ids_are_unique(self, info: ValidationInfo) -> TaskState:
        if not (info.context or {}).get(STORED):
            self.check()
        return self

    def check(self) -> None:
        """Raise `InvalidTaskState` unless every subtask id is used once."""
        counts = Counter(s.id for s in self.subtasks)
        duplicates = [subtask_id for subtask_id, n in counts.items() if n > 1]
        if duplicates:
            raise InvalidTaskState(
                f"subtask id {', '.join(repr(d) for d in duplicates)} is used by more than one subtask"
            )

    def subtask(self, subtask_id: str) -> Subtask:
        for subtask in self.subtasks:
            if subtask.id == subtask_id:
                return subtask
        raise KeyError(subtask_id)

    def find_subtask(self, subtask_id: str) -> Subtask | None:
        try:
            return self.subtask(subtask_id)
        except KeyError:
            return None

    def record(
        self,
        kind: EventKind,
        message: str,
        *,
        level: EventLevel = "info",
        subtask_id: str | None = None,
        status: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> TaskEvent:
        event = TaskEvent(
            seq=self.events[-1].seq + 1 if self.events else 1,
            at=utcnow(),
            kind=kind,
            message=message,
            level=level,
            subtask_id=subtask_id,
            status=status,
            data=data,
        )
        self.events.append(event)
        return event

    def set_status(self, status: TaskStatus, message: str, *, level: EventLevel = "info") -> None:
        self.status = status
        if status.terminal:
            self.completed_at = utcnow()
        self.record(EventKind.TASK_STATUS, message, level=level, status=status.value)

    def set_subtask_status(
        self,
        subtask: Subtask,
        status: SubtaskStatus,
        message: str,
        *,
        level: EventLevel = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        subtask.status = status
        self.record(
            EventKind.SUBTASK_STATUS,
            message,
            level=level,
            subtask_id=subtask.id,
            status=status.value,
            data=data,
        )

    @property
    def logs(self) -> list[str]:
        return [event.log_line() for event in self.events]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> TaskState:
        # What is stored loads as it is, even a state written before ids were checked: readers
        # can still show it, and the store fails it at its next write instead of refusing it.
        return cls.model_validate_json(raw, context={STORED: True})
