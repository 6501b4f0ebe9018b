"""Aether's tasks in A2A's terms (protocol 1.0, the SDK's protobuf types): states, tasks, the
messages of their history and the updates of their live stream. Plain functions, no I/O; the
agent itself (`a2a_agent.py`) reads the tasks and their files.

State mapping (Aether → A2A):

    pending                           → submitted
    planning, executing, synthesizing → working
    completed                         → completed
    failed                            → failed
    cancelled                         → canceled

Aether has no state that waits for its caller yet (plan approval, questions): when it does, those
map to input-required. A task retried over REST leaves its terminal state for working again, which
A2A does not foresee; an A2A client sees the same task id working again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskStatusUpdateEvent,
)
from a2a.types.a2a_pb2 import TaskState as A2AState
from a2a.types.a2a_pb2 import TaskStatus as A2AStatus
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from aether_contracts.events import ToolStep
from aether_contracts.state import EventKind, TaskState, TaskStatus

from .schemas import TaskEventBody

STATES: dict[TaskStatus, A2AState] = {
    TaskStatus.PENDING: A2AState.TASK_STATE_SUBMITTED,
    TaskStatus.PLANNING: A2AState.TASK_STATE_WORKING,
    TaskStatus.AWAITING_APPROVAL: A2AState.TASK_STATE_INPUT_REQUIRED,  # a person approves the plan
    TaskStatus.EXECUTING: A2AState.TASK_STATE_WORKING,
    TaskStatus.SYNTHESIZING: A2AState.TASK_STATE_WORKING,
    TaskStatus.COMPLETED: A2AState.TASK_STATE_COMPLETED,
    TaskStatus.FAILED: A2AState.TASK_STATE_FAILED,
    TaskStatus.CANCELLED: A2AState.TASK_STATE_CANCELED,
}
ORIGIN_KEY = "a2a"
"""Where the creation event's `data` keeps what the A2A message said (`Origin`)."""


def a2a_state(status: TaskStatus) -> A2AState:
    return STATES[status]


def aether_statuses(state: int) -> set[TaskStatus]:
    """The Aether statuses one A2A state stands for (empty: none, e.g. input-required)."""
    return {status for status, mapped in STATES.items() if mapped == state}


def origin(message: Message) -> dict[str, Any]:
    """What the creation event keeps of the A2A message that asked for the task."""
    return {ORIGIN_KEY: {"message_id": message.message_id, "context_id": message.context_id or None}}


def _origin_of(state: TaskState) -> dict[str, Any]:
    first = state.events[0] if state.events else None
    if first is None or first.kind != EventKind.TASK_CREATED or not isinstance(first.data, dict):
        return {}
    found = first.data.get(ORIGIN_KEY)
    return found if isinstance(found, dict) else {}


def context_id(state: TaskState) -> str:
    """The caller's context, as its message named it; else the task is a context of its own."""
    return _origin_of(state).get("context_id") or state.id


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    # Through JSON: datetimes become strings, and nothing a Struct cannot hold is left.
    struct.update(json.loads(json.dumps(values, default=str)))
    return struct


def agent_message(state: TaskState, text: str, message_id: str) -> Message:
    return Message(
        message_id=message_id,
        context_id=context_id(state),
        task_id=state.id,
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )


def user_message(state: TaskState) -> Message:
    """The message that asked for the task (for a task submitted over REST: its description)."""
    return Message(
        message_id=_origin_of(state).get("message_id") or f"{state.id}-request",
        context_id=context_id(state),
        task_id=state.id,
        role=Role.ROLE_USER,
        parts=[Part(text=state.description)],
    )


def status(state: TaskState) -> A2AStatus:
    """The task's A2A status; its message is the last entry of the history (or the error)."""
    last = state.events[-1] if state.events else None
    text = state.error if state.status == TaskStatus.FAILED and state.error else (last.message if last else "")
    result = A2AStatus(state=a2a_state(state.status), timestamp=_timestamp(state.updated_at))
    if text:
        result.message.CopyFrom(agent_message(state, text, f"{state.id}-event-{last.seq if last else 0}"))
    return result


def task(state: TaskState, artifacts: Sequence[Artifact] = ()) -> Task:
    return Task(
        id=state.id,
        context_id=context_id(state),
        status=status(state),
        artifacts=list(artifacts),
        history=[user_message(state)],
        metadata=struct(
            {
                "aether": {
                    "status": state.status.value,
                    "masterDeploymentId": state.master_id,
                    "round": state.round,
                    "subtasks": len(state.subtasks),
                    "traceId": state.trace_id,
                }
            }
        ),
    )


def event_update(state: TaskState, event: TaskEventBody, current: TaskStatus) -> TaskStatusUpdateEvent:
    """One entry of the task's history, as a status update in the state the task was then in."""
    message = agent_message(state, event.message, f"{state.id}-event-{event.seq}")
    details = {"seq": event.seq, "kind": event.kind, "level": event.level}
    if event.subtask_id:
        details["subtaskId"] = event.subtask_id
    if event.status:
        details["status"] = event.status
    return TaskStatusUpdateEvent(
        task_id=state.id,
        context_id=context_id(state),
        status=A2AStatus(state=a2a_state(current), message=message, timestamp=_timestamp(event.at)),
        metadata=struct({"aether": {"event": details}}),
    )


def step_update(state: TaskState, step: ToolStep) -> TaskStatusUpdateEvent:
    """An expert's tool call, live: the task is working."""
    outcome = "ok" if step.ok else "failed"
    text = f"{step.subtask_id}: {step.kind} {step.tool} {outcome}: {step.summary}"
    message = agent_message(state, text, f"{state.id}-step-{step.subtask_id}-{step.attempt}-{step.kind}-{step.index}")
    return TaskStatusUpdateEvent(
        task_id=state.id,
        context_id=context_id(state),
        status=A2AStatus(state=A2AState.TASK_STATE_WORKING, message=message, timestamp=_timestamp(step.at)),
        metadata=struct(
            {"aether": {"step": {"subtaskId": step.subtask_id, "tool": step.tool, "index": step.index, "ok": step.ok}}}
        ),
    )


def artifact_update(state: TaskState, artifact: Artifact) -> TaskArtifactUpdateEvent:
    return TaskArtifactUpdateEvent(
        task_id=state.id, context_id=context_id(state), artifact=artifact, append=False, last_chunk=True
    )


def final_update(state: TaskState) -> TaskStatusUpdateEvent:
    """The last update of a stream: the task's terminal status."""
    return TaskStatusUpdateEvent(task_id=state.id, context_id=context_id(state), status=status(state))
