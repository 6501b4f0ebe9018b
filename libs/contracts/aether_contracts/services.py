"""Service liveness, as written to the `services` KV bucket (key = `<service>.<instance>`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from .state import utcnow

REQUIRED_SERVICES = ("planner", "executor", "synthesizer")
"""`GET /api/health` is 200 only while each of these has a live instance."""


class ServiceHeartbeat(BaseModel):
    service: str
    instance: str
    pid: int
    host: str
    started_at: datetime
    last_seen: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return service_key(self.service, self.instance)


def service_key(service: str, instance: str) -> str:
    # KV keys allow [-/_=.a-zA-Z0-9]; hostnames and pids fit, anything else is replaced.
    safe = "".join(c if c.isalnum() or c in "-_=" else "_" for c in instance)
    return f"{service}.{safe}"
