from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from aether_core.mirror import KVMirror
from aether_core.service import Runtime
from aether_core.store import TaskStore
from aether_core.templates import Registry
from aether_core.workspace_store import WorkspaceStore

from .auth import QUERY_KEY_SUFFIX, KeyRing, LinkSigner, Principal, is_open
from .index import TaskIndex
from .metrics import GatewayMetrics
from .quota import ActiveTasks
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
    links: LinkSigner | None = None
    """Signs the short-lived download links."""
    quota: ActiveTasks | None = None
    """Tasks in progress per tenant, admitted by compare-and-set."""

    @property
    def store(self) -> TaskStore:
        return self.runtime.store


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


SIGNED_DOWNLOADS = {"/api/orchestrate/task/{task_id}/repository.bundle": "bundle",
                    "/api/orchestrate/task/{task_id}/repository.tar.gz": "archive"}
"""The routes a signed link may open (`LinkSigner`), and the download each one is."""


def authenticate(connection: HTTPConnection) -> None:
    """The app-wide dependency: every route but the open ones needs a key.

    HTTP: 401 without one. A WebSocket is refused by its route after the accept, so the client
    can read why (a refused handshake only says 403): the outcome waits in its state.
    """
    route = connection.scope.get("route")
    path = getattr(route, "path", None)
    if is_open(path):
        return
    gw: Gateway = connection.app.state.gateway
    query = bool(path and path.endswith(QUERY_KEY_SUFFIX))
    if connection.scope["type"] == "websocket":
        try:
            connection.state.principal = gw.keys.principal(connection, query=query)
        except HTTPException as refused:
            connection.state.refused = refused
        return
    params = connection.query_params
    if path in SIGNED_DOWNLOADS and "signature" in params and gw.keys.enabled:
        assert gw.links is not None
        task_id = connection.path_params.get("task_id", "")
        connection.state.principal = gw.links.principal(
            task_id, SIGNED_DOWNLOADS[path], params.get("expires", ""), params["signature"]
        )
        return
    connection.state.principal = gw.keys.principal(connection, query=query)


def get_principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        # An open route asked who calls: it is not open then (see auth.OPEN_PATHS).
        raise HTTPException(500, "this route is open and cannot name its caller")
    return principal


def websocket_principal(connection: HTTPConnection) -> Principal:
    """The WebSocket's caller, or the HTTPException `authenticate` refused it with."""
    refused = getattr(connection.state, "refused", None)
    if refused is not None:
        raise refused
    return connection.state.principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, f"tenant '{principal.tenant}' may not manage the agent pool (admin keys only)")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
