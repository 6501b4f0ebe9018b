"""The messages that travel between services, one model per subject.

Events carry identifiers, not state: the state lives in the `tasks` KV bucket, and a handler reads
it there, so a redelivered or duplicated event can always be checked against the truth. New fields
must have defaults, so old readers and old messages keep working.

`dedup_id` gives each event its `Nats-Msg-Id`: publishing the same logical event twice (a handler
redelivered after it published but before it acked) is dropped by JetStream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .state import TraceSpan, Usage, Verification, utcnow
from .workspace import RefusedFile, WorkspaceFile

MSG_ID_HEADER = "Nats-Msg-Id"


class TaskCreated(BaseModel):
    task_id: str
    description: str
    master_id: str = "jason"
    tenant: str | None = None
    trace_id: str | None = None
    """The task's trace (see `TaskState.trace_id`), for a planner that must restore the state."""
    workflow_span: TraceSpan | None = None
    """The task's span (see `TaskState.workflow_span`), for the same."""
    created_at: datetime = Field(default_factory=utcnow)
    round: int = 1
    """Bumped when a task that failed in planning is retried (planned again from scratch)."""
    approval_timeout_s: float | None = None
    """Set when a person must approve the plan (for a planner that must restore the state)."""
    question_timeout_s: float | None = None

    def dedup_id(self) -> str:
        return f"created:{self.task_id}:{self.round}"


class PlanReady(BaseModel):
    task_id: str
    round: int = 1
    """Bumped by every retry or replan, which changes the plan and needs a new dispatch."""
    answered: str | None = None
    """`<subtask id>:<question no>` when an answer made that subtask ready to resume."""

    def dedup_id(self) -> str:
        if self.answered:
            return f"plan:{self.task_id}:{self.round}:answered:{self.answered}"
        return f"plan:{self.task_id}:{self.round}"


class ReplanRequested(BaseModel):
    task_id: str
    subtask_ids: list[str]
    round: int = 1

    def dedup_id(self) -> str:
        return f"replan:{self.task_id}:{self.round}:{','.join(self.subtask_ids)}"


class TaskExpired(BaseModel):
    """The body of a deadline schedule, delivered by NATS when the deadline passes: the task's
    own, or that of a wait for a person (a plan's approval, a subtask's question)."""

    task_id: str
    timeout_s: float
    round: int = 1
    """A deadline armed for an earlier round (before a retry) no longer applies."""
    waiting: Literal["task", "approval", "question"] = "task"
    subtask_id: str | None = None
    """For a question: whose."""
    question_no: int = 0
    """For a question: which (a deadline of a question answered since no longer applies)."""


class SubtaskReady(BaseModel):
    task_id: str
    subtask_id: str
    agent_type: str
    dispatch: int = 1
    """The subtask's `dispatches` count when it was queued: a retry is a new dispatch."""
    resume: bool = False
    """An answered question: the agent continues the stored conversation (the state says which)."""

    def dedup_id(self) -> str:
        return f"ready:{self.task_id}:{self.subtask_id}:{self.dispatch}"


class SubtaskFinished(BaseModel):
    task_id: str
    subtask_id: str
    dispatch: int = 1
    outcome: Literal["completed", "failed"]
    result: str | None = None
    error: str | None = None
    retryable: bool = False
    """For a failure: whether running it again could help (a timeout) or not (a refused prompt)."""
    budget_spent: bool = False
    """Not run: the task's token budget left too little for its call (the task stops politely)."""
    agent_id: str | None = None
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    started_at: datetime | None = None
    finished_at: datetime = Field(default_factory=utcnow)
    files: list[WorkspaceFile] = Field(default_factory=list)
    """Stored in the Object Store before this event is published."""
    refused_files: list[RefusedFile] = Field(default_factory=list)
    steps: int = 0
    tool_errors: int = 0
    verification: Verification | None = None

    def dedup_id(self) -> str:
        return f"finished:{self.task_id}:{self.subtask_id}:{self.dispatch}"


class ToolStep(BaseModel):
    """One tool call of an expert, published on `aether.step.<task>.<subtask>` (the step log of a
    subtask lives on the stream, not in the task state, which keeps only the counts)."""

    task_id: str
    subtask_id: str
    attempt: int
    """The subtask's run (its `attempts` when it ran), so a rerun's steps are told apart."""
    index: int
    tool: str
    call_id: str
    arguments: str
    """As the model wrote them, bounded."""
    ok: bool
    exit_code: int | None = None
    summary: str
    """The first line of the result."""
    output: str = ""
    """The result the model read, bounded."""
    duration_ms: int = 0
    at: datetime = Field(default_factory=utcnow)
    kind: Literal["tool", "check"] = "tool"
    """`check`: one of the subtask's checks, run by Aether after the loop."""

    def dedup_id(self) -> str:
        return f"step:{self.task_id}:{self.subtask_id}:{self.attempt}:{self.kind}:{self.index}"


class SynthesisRequested(BaseModel):
    task_id: str
    round: int = 1
    """Bumped when a retried task needs a new synthesis."""

    def dedup_id(self) -> str:
        return f"synthesis:{self.task_id}:{self.round}"


class TaskFinished(BaseModel):
    task_id: str
    status: Literal["completed", "failed", "cancelled"]
    round: int = 1

    def dedup_id(self) -> str:
        return f"finished-task:{self.task_id}:{self.round}:{self.status}"


class TaskControl(BaseModel):
    """Broadcast on core NATS to every service: stop work on this task now.

    Losing one is harmless: the state says the task is over, and every handler checks it before
    it writes; the broadcast only saves the LLM calls still running.
    """

    task_id: str
    action: Literal["cancel"]
    reason: str = "cancelled"


class AgentEvent(BaseModel):
    """`aether.agent.started|stopped|failed`, published by whoever saw it happen."""

    agent_id: str
    agent_type: str
    kind: Literal["started", "stopped", "failed"]
    backend: str
    runtime_id: str | None = None
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)

    def dedup_id(self) -> str:
        return f"agent:{self.agent_id}:{self.kind}"


class AgentControl(BaseModel):
    """A request to an agent or to the container-manager; answered with an `AgentControlReply`."""

    agent_id: str
    action: Literal["stop"]
    reason: str = "deleted through the API"


class AgentControlReply(BaseModel):
    agent_id: str
    accepted: bool
    detail: str = ""
