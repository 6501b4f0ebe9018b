"""The agent pool, as kept in the `agents` KV bucket (key = agent id).

An agent is a running executor worker bound to one agent type (an expert), or a master (Jason).
Workers write their own record (a heartbeat with their status and current subtask); the
container-manager writes the records of agents it is starting or stopping. `GET /api/agents`
serves these records; masters cannot be deleted.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from .state import utcnow

AGENT_TTL_S = 15.0
"""An expert whose record is older than this is dead (its process or container is gone)."""
AGENT_RECORD_MAX_AGE_S = 60.0
"""The `agents` bucket forgets a record this long after its last write (crashed agents vanish)."""
ANY_TYPE = "*"
"""The agent type of a worker that serves every type (the executor's `all` role)."""


class AgentStatus(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


Backend = Literal["builtin", "process", "docker", "kubernetes", "external"]


class AgentRecord(BaseModel):
    id: str
    name: str
    role: Literal["master", "expert"]
    agent_type: str
    """The expert's template type, or the master's id (`jason`)."""
    backend: Backend
    runtime_id: str | None = None
    """Container id, process id or pod name, per backend."""
    host: str | None = None
    status: AgentStatus = AgentStatus.STARTING
    started_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)
    idle_since: datetime | None = None
    current_task: str | None = None
    current_subtask: str | None = None
    subtasks_done: int = 0
    error: str | None = None

    @property
    def deletable(self) -> bool:
        return self.role != "master"

    def serves(self, agent_type: str) -> bool:
        if self.role != "expert":
            return False
        return self.agent_type == ANY_TYPE or agent_type in self.agent_type.split(",")

    def alive(self, now: datetime) -> bool:
        if self.role == "master":
            return True
        fresh = (now - self.last_seen).total_seconds() < AGENT_TTL_S
        return fresh and self.status in (AgentStatus.STARTING, AgentStatus.IDLE, AgentStatus.BUSY)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def agent_key(agent_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in agent_id)
