"""Aether as an MCP server at `/mcp` (Streamable HTTP, the official SDK), for coding assistants.

The tools call what the REST routes call, with the caller's key and tenant: nothing here knows
more about tasks than the routes do, and another tenant's task is "no task with id" here too. The
transport is stateless (every request stands alone, as the 2026-07-28 revision has it, and the
SDK serves the handshake revisions the same way), so any gateway replica answers any request.
In front of the SDK's transport: the key check (401 as the SDK's own bearer check answers it),
the Origin check the transport spec asks for, and the body limit, each a JSON-RPC error body.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from mcp.server import MCPServer
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_REQUEST, CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from aether_contracts.state import TaskStatus

from .auth import KeyRing, Principal
from .deps import Gateway
from .routes import files, tasks
from .schemas import (
    AnswerRequest,
    ApproveRequest,
    Progress,
    RejectRequest,
    RetryRequest,
    TaskBody,
    TaskSubmission,
    TaskSummary,
)
from .settings import GatewaySettings

MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "Aether orchestrates coding work: submit_task hands a task to a master agent, who plans it "
    "into subtasks for expert agents and synthesizes their results. Tasks take a while: poll "
    "get_task until its status is completed, failed or cancelled, then read final_result, the "
    "files (get_task_files, read_task_file) and the repository's download links."
)
TaskId = Annotated[str, Field(description="The task's id, as submit_task or list_tasks gave it.", max_length=128)]


class TaskHandle(BaseModel):
    """What submit, cancel and retry answer: the task's state in brief (get_task has the rest; its
    full schema, repeated in every tool's definition, would cost a client's model 10 KB each)."""

    id: str
    description: str
    status: TaskStatus
    master_deployment_id: str
    round: int
    progress: Progress
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None

    @classmethod
    def of(cls, task: TaskBody) -> TaskHandle:
        return cls(**task.model_dump(include=set(cls.model_fields)))


class TaskList(BaseModel):
    tasks: list[TaskSummary]
    """Newest first."""
    total: int
    """How many tasks match, beyond `limit` too."""


class FileContent(BaseModel):
    task_id: str
    path: str
    size: int
    sha256: str
    written_by: str
    """A subtask id, or `synthesis`."""
    encoding: Literal["utf-8", "base64"]
    content: str
    """The file's text, or its bytes in base64 when it is not UTF-8."""


def create_server() -> MCPServer:
    # No subscriptions/listen (nor listChanged): the tools never change, and nothing publishes.
    server = MCPServer("aether", title="Aether", version="0.1.0", instructions=INSTRUCTIONS, subscriptions=False)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False))
    async def submit_task(
        description: Annotated[str, Field(description="The coding task, in plain language.")],
        ctx: Context,
        master_deployment_id: Annotated[
            str | None, Field(description="The master agent that plans and synthesizes; default `jason`.")
        ] = None,
        require_plan_approval: Annotated[
            bool, Field(description="Wait for approve_plan before any subtask runs.")
        ] = False,
    ) -> TaskHandle:
        """Submit a coding task. Returns the task as it starts (status `pending`); its plan, subtasks
        and final result come later: poll get_task."""
        gw, principal = _caller(ctx)
        fields: dict[str, Any] = {"description": description, "master_deployment_id": master_deployment_id}
        if require_plan_approval:
            if "require_plan_approval" not in TaskSubmission.model_fields:
                raise ToolError("plan approval is not available on this gateway: submit without require_plan_approval")
            fields["require_plan_approval"] = True
        return TaskHandle.of(await _answer(tasks.submit_task(TaskSubmission(**fields), gw, principal, Response())))

    @server.tool(annotations=read_only)
    async def get_task(task_id: TaskId, ctx: Context) -> TaskBody:
        """A task: its status, plan, subtasks with their results, final result, error, token usage
        and history (`logs`)."""
        gw, principal = _caller(ctx)
        return await _answer(tasks.get_task(task_id, gw, principal))

    @server.tool(annotations=read_only)
    async def list_tasks(
        ctx: Context,
        status: Annotated[TaskStatus | None, Field(description="Only tasks in this status.")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many, newest first.")] = 50,
    ) -> TaskList:
        """Your tasks, newest first, with their progress and latest event."""
        gw, principal = _caller(ctx)
        items, total = gw.index.page(limit=limit, offset=0, status=status, tenant=principal.tenant)
        return TaskList(tasks=items, total=total)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=False))
    async def cancel_task(task_id: TaskId, ctx: Context) -> TaskHandle:
        """Cancel a task: pending subtasks never start, running ones are stopped. An error if the
        task has already ended."""
        gw, principal = _caller(ctx)
        return TaskHandle.of(await _answer(tasks.cancel_task(task_id, gw, principal)))

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=False))
    async def retry_task(
        task_id: TaskId,
        ctx: Context,
        subtask_id: Annotated[
            str | None,
            Field(max_length=64, description="Retry this failed subtask only; default every one that failed."),
        ] = None,
    ) -> TaskHandle:
        """Run a finished task's failed subtasks again (and the dependents that never ran), keeping
        every result that succeeded; a task that failed before its plan is planned again."""
        gw, principal = _caller(ctx)
        request = RetryRequest(subtask_ids=[subtask_id] if subtask_id is not None else None)
        return TaskHandle.of(await _answer(tasks.retry_task(task_id, gw, principal, request)))

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=False))
    async def approve_plan(
        task_id: TaskId,
        ctx: Context,
        plan: Annotated[
            dict[str, Any] | None,
            Field(description="A plan of your own instead of Jason's ({analysis, subtasks: [{id, description, "
                              "agent_type, depends_on, verify}]}); default: run Jason's as it is."),
        ] = None,
    ) -> TaskHandle:
        """Approve the plan of a task that is `awaiting_approval` (submitted with
        require_plan_approval): it runs. An edited plan is checked as Jason's is; every problem is
        named in the error. An error if the task is not awaiting approval."""
        gw, principal = _caller(ctx)
        return TaskHandle.of(await _answer(tasks.approve_task(task_id, gw, principal, ApproveRequest(plan=plan))))

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=False))
    async def reject_plan(
        task_id: TaskId,
        reason: Annotated[str, Field(min_length=1, max_length=2000, description="Why: the task ends cancelled with it.")],
        ctx: Context,
    ) -> TaskHandle:
        """Reject the plan of a task that is `awaiting_approval`: the task ends `cancelled` with the
        reason, and nothing ran."""
        gw, principal = _caller(ctx)
        return TaskHandle.of(await _answer(tasks.reject_task(task_id, RejectRequest(reason=reason), gw, principal)))

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=False))
    async def answer_question(
        task_id: TaskId,
        subtask_id: Annotated[str, Field(min_length=1, max_length=64, description="The subtask whose expert asked.")],
        answer: Annotated[str, Field(min_length=1, max_length=20_000, description="Your answer; the expert goes on with it.")],
        ctx: Context,
    ) -> TaskHandle:
        """Answer the open question of a subtask that is `awaiting_input` (get_task shows it in the
        subtask's `question`): its expert goes on with the answer as its ask_user result."""
        gw, principal = _caller(ctx)
        request = AnswerRequest(answer=answer)
        return TaskHandle.of(await _answer(tasks.answer_question(task_id, subtask_id, request, gw, principal)))

    @server.tool(annotations=read_only)
    async def get_task_files(task_id: TaskId, ctx: Context) -> files.WorkspaceBody:
        """A task's files (as its repository's last commit has them, and every version each subtask
        wrote), path conflicts, refused files, and its repository: a git bundle and a .tar.gz, as
        links that download without a key for `links_expire_in_s` seconds."""
        gw, principal = _caller(ctx)
        body = await _answer(files.list_files(task_id, gw, principal))
        if body.repository is not None:
            base = str(_request(ctx).base_url).rstrip("/")
            body.repository.bundle_url = base + body.repository.bundle_url
            body.repository.archive_url = base + body.repository.archive_url
        return body

    @server.tool(annotations=read_only)
    async def read_task_file(
        task_id: TaskId,
        path: Annotated[str, Field(max_length=4096, description="The file's path, as get_task_files lists it.")],
        ctx: Context,
        written_by: Annotated[
            str | None,
            Field(max_length=128, description="The version this subtask (or `synthesis`) wrote; default the last commit's."),
        ] = None,
    ) -> Annotated[CallToolResult, FileContent]:
        """One file of a task's workspace: its text (or base64 for a binary file) and where it came from."""
        gw, principal = _caller(ctx)
        file, content = await _answer(files.stored_file(gw, principal, task_id, path, written_by))
        try:
            text, encoding = content.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(content).decode(), "base64"
        body = FileContent(
            task_id=task_id, **file.model_dump(exclude={"object"}), encoding=encoding, content=text
        )
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=body.model_dump(mode="json"),
        )

    @server.resource(
        "aether://tasks/{task_id}/result",
        name="task-result",
        description="A completed task's final result: Jason's synthesis of every subtask.",
        mime_type="text/markdown",
    )
    async def task_result(task_id: str, ctx: Context) -> str:
        gw, principal = _caller(ctx)
        try:
            task = await tasks.get_task(task_id, gw, principal)
        except HTTPException as refused:
            raise ResourceNotFoundError(str(refused.detail)) from None
        if task.final_result is None:
            raise ResourceNotFoundError(f"task '{task_id}' is {task.status.value}: it has no final result")
        return task.final_result

    @server.resource(
        "aether://tasks/{task_id}/files/{+path}",
        name="task-file",
        description="One file of a task's workspace, as its repository's last commit has it.",
    )
    async def task_file(task_id: str, path: str, ctx: Context) -> str | bytes:
        gw, principal = _caller(ctx)
        try:
            _, content = await files.stored_file(gw, principal, task_id, path)
        except HTTPException as refused:
            raise ResourceNotFoundError(str(refused.detail)) from None
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return content

    return server


def _request(ctx: Context) -> Request:
    """The HTTP request this MCP request came in."""
    request = ctx.request_context.request
    assert isinstance(request, Request), request
    return request


def _caller(ctx: Context) -> tuple[Gateway, Principal]:
    """The gateway and the caller of the HTTP request this MCP request came in (McpEndpoint put it
    there: every request is authenticated on its own)."""
    request = _request(ctx)
    user = request.scope.get("user")
    assert isinstance(user, TenantUser), "the MCP endpoint let an unauthenticated request through"
    return request.app.state.gateway, user.principal


async def _answer(call):
    """A route's answer, or its refusal (404, 409, 422, 429) as the tool's error."""
    try:
        result = await call
    except HTTPException as refused:
        raise ToolError(str(refused.detail)) from None
    if isinstance(result, JSONResponse):  # 429 (with Retry-After), an edited plan's 422 (its problems)
        body = json.loads(bytes(result.body))
        detail, problems = body.get("detail", "refused"), body.get("problems") or []
        retry = result.headers.get("retry-after")
        raise ToolError(f"{detail}" + (f" (in {retry} s)" if retry else "") + "".join(f"\n- {p}" for p in problems))
    return result


class TenantUser(AuthenticatedUser):
    """The caller as the SDK sees it (`scope["user"]`): a stateful session would be bound to its
    tenant; the tools read the gateway's own principal from it."""

    def __init__(self, principal: Principal) -> None:
        super().__init__(AccessToken(token="", client_id=principal.tenant or "", scopes=[]))
        self.principal = principal


class McpEndpoint:
    """The ASGI app at `/mcp`: the checks every REST request gets, answered as MCP clients read
    them, then the SDK's Streamable HTTP transport."""

    def __init__(self, settings: GatewaySettings, keys: KeyRing) -> None:
        self.server = create_server()
        self.keys = keys
        self.max_body = settings.max_body_bytes
        self.origins = settings.cors_origin_list
        # The SDK's app is not served (its route would be a mount's, and its lifespan is run by the
        # gateway's): only the session manager it makes, which serves this endpoint's requests.
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            # Plain JSON answers: no tool streams progress, and a client that takes only
            # application/json (curl, a proxy) is served as well as one that also takes SSE.
            json_response=True,
            max_request_body_size=self.max_body,
            # Hosts are the deployment's to choose; the Origin check is ours (below).
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager = self.server.session_manager
        # Stateless: every request ends its one-request "session" with an INFO line.
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
        # A route, not a mount: a mount at /mcp serves /mcp/ and redirects /mcp (python-sdk#1367).
        # POST only: stateless, the server has nothing to send on a GET stream (which would stay
        # open, silent, for ever) and no session to DELETE; both are a 405, as the spec allows.
        self.route = Route(MCP_PATH, endpoint=self, methods=["POST"], name="mcp")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = HTTPConnection(scope)
        if not self._origin_allowed(connection):
            await _error(403, "Forbidden: this Origin may not call the MCP endpoint")(scope, receive, send)
            return
        try:
            principal = self.keys.principal(connection)
        except HTTPException as refused:
            await _unauthorized(str(refused.detail))(scope, receive, send)
            return
        scope["user"] = TenantUser(principal)
        declared = connection.headers.get("content-length", "")
        too_long = declared.isdigit() and int(declared) > self.max_body
        body = None if too_long else await _bounded_body(receive, self.max_body)
        if body is None:
            await _error(413, f"request body larger than {self.max_body} bytes")(scope, receive, send)
            return
        await self.manager.handle_request(scope, _replay(body, receive), send)

    def _origin_allowed(self, connection: HTTPConnection) -> bool:
        """A browser page may call only from the gateway's own origin or a CORS_ORIGINS one (the
        transport spec's MUST against DNS rebinding; other clients send no Origin)."""
        origin = connection.headers.get("origin")
        if origin is None or "*" in self.origins or origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.netloc == connection.headers.get("host") and parts.scheme == connection.url.scheme


def _error(status: int, message: str) -> Response:
    """A JSON-RPC error without an id (the request was not read), as the transport answers."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": message}}
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _unauthorized(description: str) -> Response:
    """401 as the SDK's RequireAuthMiddleware words it (RFC 6750), with the REST API's reason."""
    body = {"error": "invalid_token", "error_description": description}
    challenge = f'Bearer error="invalid_token", error_description="{description}"'
    return Response(
        json.dumps(body), status_code=401, media_type="application/json", headers={"WWW-Authenticate": challenge}
    )


async def _bounded_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `limit` bytes (declared or sent)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
