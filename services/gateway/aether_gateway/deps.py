from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from aether_core.mirror import KVMirror
from aether_core.service import Runtime
from aether_core.store import TaskStore
from aether_core.templates import Registry
from aether_core.workspace_store import WorkspaceStore

from .auth import KeyRing, Principal
from .index import TaskIndex
from .metrics import GatewayMetrics
from .settings import GatewaySettings
from .streams import StreamHub


@dataclass
class Gateway:
    settings: GatewaySettings
    runtime: Runtime
    registry: Registry
    index: TaskIndex
    services: KVMirror
    """The `services` bucket (heartbeats), mirrored for /api/health."""
    agents: KVMirror
    """The `agents` bucket (the pool), mirrored for /api/agents and /metrics."""
    keys: KeyRing
    metrics: GatewayMetrics
    streams: StreamHub
    """The live streams' fan-out, fed by the index's watch."""
    workspace: WorkspaceStore | None = None
    """The `workspace` Object Store: task files and repositories."""

    @property
    def store(self) -> TaskStore:
        return self.runtime.store


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def get_principal(request: Request) -> Principal:
    return request.app.state.gateway.keys.principal(request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, f"tenant '{principal.tenant}' may not manage the agent pool (admin keys only)")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
