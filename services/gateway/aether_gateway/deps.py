from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from aether_core.mirror import KVMirror
from aether_core.service import Runtime
from aether_core.store import TaskStore
from aether_core.templates import Registry

from .index import TaskIndex
from .settings import GatewaySettings


@dataclass
class Gateway:
    settings: GatewaySettings
    runtime: Runtime
    registry: Registry
    index: TaskIndex
    services: KVMirror
    """The `services` bucket (heartbeats), mirrored for /api/health."""
    agents: KVMirror
    """The `agents` bucket (the pool), mirrored for /api/agents."""

    @property
    def store(self) -> TaskStore:
        return self.runtime.store


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
