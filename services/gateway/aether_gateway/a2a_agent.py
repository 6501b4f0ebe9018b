"""Aether as an A2A agent (issue 16), with the official SDK (`a2a-sdk`, protocol 1.0).

- `GET /.well-known/agent-card.json` (open): the agent card, one skill per master, each listing
  the expert types; it names the Bearer scheme the API keys use.
- `POST /a2a`: JSON-RPC (1.0, and 0.3 through the SDK's compatibility layer); `/a2a/rest/...`: the
  HTTP+JSON binding. Both are routes of the app, so `deps.authenticate` guards them like REST:
  the key names the tenant, and another tenant's task does not exist.

A message creates an Aether task (`routes.tasks.create_task`, as `POST /api/orchestrate/task`);
its message id is the idempotency key, so a client that resends it gets the same task. The SDK's
dispatchers parse the protocol and answer its errors; `AetherAgent` is a `RequestHandler` over
Aether's own task store and live streams (`streams.py`), with no task store of the SDK's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from a2a.auth.user import User
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.jsonrpc_models import JSONParseError
from a2a.server.request_handlers.request_handler import RequestHandler, validate_request_params
from a2a.server.request_handlers.response_helpers import agent_card_to_dict, build_error_response
from a2a.server.routes import DefaultServerCallContextBuilder, ServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.routes.rest_routes import create_rest_routes
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, TransportProtocol
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    ExtendedAgentCardNotConfiguredError,
    InvalidParamsError,
    InvalidRequestError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.task import apply_history_length, validate_history_length
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf.json_format import MessageToDict

from aether_contracts.state import EventKind, TaskState, TaskStatus
from aether_core.workspace import final_files
from aether_core.workspace_store import ObjectCorrupt, ObjectMissing

from . import a2a_tasks
from .auth import Principal, visible
from .deps import Gateway
from .routes.tasks import cancel, create_task, plausible_task_id
from .schemas import StreamErrorMessage, TaskEventMessage, TaskStepMessage
from .streams import TaskFeed

if TYPE_CHECKING:
    from starlette.routing import Route
    from starlette.types import Message as ASGIMessage

CARD_PATH = "/.well-known/agent-card.json"
JSONRPC_PATH = "/a2a"
REST_PREFIX = "/a2a/rest"
INLINE_FILES_MAX_BYTES = 512 * 1024
"""A task's files travel inside its `files` artifact up to this much in all; the rest as links
to `GET …/files/{path}` (which take the same key)."""
DISCONNECT_CHECK_S = 5.0
"""How often a blocking SendMessage looks whether its caller is still there."""
MASTER_KEYS = ("masterDeploymentId", "master_deployment_id")
STATUSES = frozenset(s.value for s in TaskStatus)
ID_MAX_CHARS = 200
OUTPUT_MODES = ["text/markdown", "text/plain", "application/x-git-bundle", "application/gzip"]

# Out of /openapi.json: A2A clients read the card, and the protocol has its own schema.
router = APIRouter(tags=["a2a"])


def sizes_its_own_body(path: str) -> bool:
    """The A2A endpoints answer an oversized body with the protocol's error, not the app's 413."""
    return path == JSONRPC_PATH or path.startswith(JSONRPC_PATH + "/")


# -- the agent card ---------------------------------------------------------------------------


def agent_card(gw: Gateway, base_url: str) -> AgentCard:
    experts = sorted(gw.registry.templates.values(), key=lambda t: t.type)
    roster = "; ".join(f"{t.type} ({t.description})" for t in experts)
    skills = [
        AgentSkill(
            id=master.id,
            name=f"{master.name}: plan, delegate and synthesize a coding task",
            description=(
                f"{master.name} breaks the task into subtasks for expert agents, runs them (in parallel "
                f"where they are independent) and integrates their work into one result and a git "
                f"repository. Expert types: {roster}. Choose this master with message metadata "
                f'{{"masterDeploymentId": "{master.id}"}}'
                + (" (the default)." if master.id == gw.settings.default_master else ".")
            ),
            tags=["coding", "orchestration", *(t.type for t in experts)],
            examples=["Build a REST API for users with FastAPI and SQLite, with tests"],
            input_modes=["text/plain"],
            output_modes=OUTPUT_MODES,
        )
        for master in sorted(gw.registry.masters.values(), key=lambda m: (m.id != gw.settings.default_master, m.id))
    ]
    card = AgentCard(
        name="Aether",
        description=(
            "An orchestrator for coding work done by LLM agents: a master plans a task into subtasks, "
            "expert agents carry them out, and the master synthesizes the result and a repository."
        ),
        supported_interfaces=[
            AgentInterface(url=base_url + JSONRPC_PATH, protocol_binding=TransportProtocol.JSONRPC, protocol_version=PROTOCOL_VERSION_1_0),
            AgentInterface(url=base_url + REST_PREFIX, protocol_binding=TransportProtocol.HTTP_JSON, protocol_version=PROTOCOL_VERSION_1_0),
            AgentInterface(url=base_url + JSONRPC_PATH, protocol_binding=TransportProtocol.JSONRPC, protocol_version=PROTOCOL_VERSION_0_3),
        ],
        provider=AgentProvider(organization="Aether", url=base_url),
        version="0.1.0",
        documentation_url=base_url + "/docs",
        capabilities=AgentCapabilities(streaming=True, push_notifications=False, extended_agent_card=False),
        default_input_modes=["text/plain"],
        default_output_modes=OUTPUT_MODES,
        skills=skills,
    )
    if gw.keys.enabled:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    description="An Aether API key (AETHER_API_KEYS); each key is a tenant.",
                )
            )
        )
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get(CARD_PATH, summary="The A2A agent card (open)", include_in_schema=False)
async def get_agent_card(request: Request) -> JSONResponse:
    return JSONResponse(agent_card_to_dict(agent_card(request.app.state.gateway, _base_url(request))))


# -- the handler ------------------------------------------------------------------------------


class _Tenant(User):
    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._principal.tenant or ""


class _CallContext(ServerCallContextBuilder):
    """The caller as `deps.authenticate` found it, and what the handler needs of the request."""

    def build(self, request: Request) -> ServerCallContext:
        context = DefaultServerCallContextBuilder().build(request)
        principal: Principal = request.state.principal
        context.user = _Tenant(principal)
        context.state["headers"] = {k: v for k, v in request.headers.items() if k != "authorization"}
        context.state.update(
            principal=principal, gateway=request.app.state.gateway, base_url=_base_url(request), request=request
        )
        return context


def _caller(context: ServerCallContext) -> tuple[Gateway, Principal]:
    return context.state["gateway"], context.state["principal"]


def _refusal(exc: HTTPException, task_id: str | None = None) -> Exception:
    """The A2A error for what the REST logic refused."""
    if exc.status_code == 404:
        return TaskNotFoundError(f"no task with id '{task_id}'" if task_id else str(exc.detail))
    if exc.status_code == 429:
        retry = (exc.headers or {}).get("Retry-After", "")
        return UnsupportedOperationError(
            f"{exc.detail} (in {retry} s)" if retry else str(exc.detail),
            data={"reason": "TOO_MANY_TASKS", "retryAfterSeconds": retry},
        )
    if exc.status_code == 409 and task_id:
        return TaskNotCancelableError(str(exc.detail))
    return InvalidParamsError(str(exc.detail))


def _text_of(message: Message) -> str:
    texts = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind != "text":
            raise ContentTypeNotSupportedError(
                f"Aether takes a task as text parts; this message has a {kind or 'empty'} part"
            )
        texts.append(part.text)
    return "\n".join(texts)


def _master_of(params: SendMessageRequest) -> str | None:
    for metadata in (params.message.metadata, params.metadata):
        values = MessageToDict(metadata)
        for key in MASTER_KEYS:
            if key in values:
                if not isinstance(values[key], str):
                    raise InvalidParamsError(f"metadata.{key} must be a string (a master's id)")
                return values[key]
    return None


async def _file_parts(gw: Gateway, state: TaskState, base_url: str) -> list[Part]:
    parts: list[Part] = []
    budget = INLINE_FILES_MAX_BYTES
    for path, file in final_files(state).items():
        url = f"{base_url}/api/orchestrate/task/{state.id}/files/{quote(path)}"
        details = a2a_tasks.struct(
            {"sha256": file.sha256, "size": file.size, "writtenBy": file.written_by, "url": url}
        )
        content = None
        if file.size <= budget and gw.workspace is not None:
            with contextlib.suppress(ObjectMissing, ObjectCorrupt):
                content = await gw.workspace.read(file.object)
        guessed = mimetypes.guess_type(path)[0]
        if content is None:
            parts.append(Part(url=url, filename=path, media_type=guessed or "application/octet-stream", metadata=details))
            continue
        budget -= len(content)
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            parts.append(Part(raw=content, filename=path, media_type=guessed or "application/octet-stream", metadata=details))
        else:
            parts.append(Part(text=text, filename=path, media_type=guessed or "text/plain", metadata=details))
    return parts


async def artifacts(gw: Gateway, state: TaskState, base_url: str) -> list[Artifact]:
    """The result text, the files and (once the task has ended) signed links to its repository."""
    found: list[Artifact] = []
    if state.final_result:
        found.append(
            Artifact(
                artifact_id="result",
                name="result.md",
                description="The master's synthesis of the experts' work.",
                parts=[Part(text=state.final_result, media_type="text/markdown")],
            )
        )
    if parts := await _file_parts(gw, state, base_url):
        found.append(
            Artifact(
                artifact_id="files",
                name="files",
                description="The files of the repository's last commit (links take the same API key).",
                parts=parts,
            )
        )
    repository = state.repository
    if repository is not None and not repository.error and repository.bundle_object and state.status.terminal:
        base = f"/api/orchestrate/task/{state.id}"
        bundle, archive = f"{base}/repository.bundle", f"{base}/repository.tar.gz"
        signer = gw.links if gw.keys.enabled else None
        if signer is not None:
            bundle, archive = signer.sign(bundle, state.id, "bundle"), signer.sign(archive, state.id, "archive")
        found.append(
            Artifact(
                artifact_id="repository",
                name=f"aether-{state.id}",
                description=(
                    "The task's git repository: `git clone` the bundle, or unpack the archive. The links "
                    "work without a key for a while (metadata.linksExpireInS); GetTask gives new ones."
                ),
                parts=[
                    Part(url=base_url + bundle, filename=f"aether-{state.id}.bundle", media_type="application/x-git-bundle"),
                    Part(url=base_url + archive, filename=f"aether-{state.id}.tar.gz", media_type="application/gzip"),
                ],
                metadata=a2a_tasks.struct(
                    {
                        "head": repository.head,
                        "branch": repository.branch,
                        "commits": len(repository.commits),
                        "files": repository.files,
                        "linksExpireInS": signer.lifetime_s if signer else None,
                    }
                ),
            )
        )
    return found


class AetherAgent(RequestHandler):
    """A2A's operations over Aether's tasks; every one sees only the caller's tenant."""

    async def _find(self, gw: Gateway, principal: Principal, task_id: str) -> tuple[TaskState, int]:
        found = await gw.store.get(task_id) if plausible_task_id(task_id) else None
        if found is None or not visible(principal, found[0].tenant):
            raise TaskNotFoundError(f"no task with id '{task_id[:200]}'")
        return found

    async def _task(self, state: TaskState, context: ServerCallContext, config=None) -> Task:
        gw, _ = _caller(context)
        return apply_history_length(a2a_tasks.task(state, await artifacts(gw, state, context.state["base_url"])), config)

    async def _submit(self, params: SendMessageRequest, context: ServerCallContext) -> TaskState:
        gw, principal = _caller(context)
        validate_history_length(params.configuration)
        message = params.message
        if message.task_id:
            await self._find(gw, principal, message.task_id)
            raise UnsupportedOperationError(
                "an Aether task takes no follow-up messages: send a new message without taskId "
                "(retry a task over REST: POST /api/orchestrate/task/{id}/retry)"
            )
        if params.configuration.HasField("task_push_notification_config"):
            raise PushNotificationNotSupportedError()
        for name, value in (("messageId", message.message_id), ("contextId", message.context_id)):
            if len(value) > ID_MAX_CHARS:
                raise InvalidParamsError(f"message.{name} is longer than {ID_MAX_CHARS} characters")
        if not message.message_id.strip():
            raise InvalidParamsError("message.messageId must not be empty")
        description = _text_of(message)
        try:
            state, _, created = await create_task(
                gw,
                principal,
                description,
                _master_of(params),
                idempotency_key=f"a2a:{message.message_id}",
                origin=a2a_tasks.origin(message),
            )
        except HTTPException as refused:
            raise _refusal(refused) from None
        if not created and state.description != description.strip():
            raise InvalidParamsError(
                f"messageId '{message.message_id}' was an earlier message with other text: send a new id"
            )
        return state

    @contextlib.asynccontextmanager
    async def _feed(
        self, context: ServerCallContext, task_id: str, start: TaskState | None = None
    ) -> AsyncIterator[TaskFeed]:
        """The task's live feed, subscribed before the state is read, so no change falls in
        between. It starts after `feed.state`: the current state, or `start` (an earlier one)."""
        gw, principal = _caller(context)
        with gw.streams.task_feed(task_id) as feed:
            state, revision = await self._find(gw, principal, task_id)
            feed.offer(state, revision)
            if start is None:
                feed.drain()
            feed.state = start or state
            feed.seq = feed.state.events[-1].seq if feed.state.events else 0
            yield feed

    async def _follow(self, feed: TaskFeed, context: ServerCallContext) -> AsyncIterator[Event]:
        """The feed as A2A stream events, in order: a status update per history entry and live
        step, then the artifacts and, last, the terminal status."""
        assert feed.state is not None
        current = feed.state.status
        while not feed.ended:
            for message in await feed.next():
                state = feed.state
                assert state is not None
                if isinstance(message, TaskEventMessage):
                    event = message.data
                    if event.kind == EventKind.TASK_STATUS and event.status in STATUSES:
                        if TaskStatus(event.status).terminal:
                            continue  # said by the final update, after the artifacts
                        current = TaskStatus(event.status)
                    yield a2a_tasks.event_update(state, event, current)
                elif isinstance(message, TaskStepMessage):
                    yield a2a_tasks.step_update(state, message.data)
                elif isinstance(message, StreamErrorMessage):
                    raise TaskNotFoundError(message.data.detail)
        final = feed.state
        gw, _ = _caller(context)
        for artifact in await artifacts(gw, final, context.state["base_url"]):
            yield a2a_tasks.artifact_update(final, artifact)
        yield a2a_tasks.final_update(final)

    @validate_request_params
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task:
        state = await self._submit(params, context)
        if not params.configuration.return_immediately:
            # A2A's default: answer once the task has ended (Aether's deadline bounds the wait).
            request: Request = context.state["request"]
            async with self._feed(context, state.id) as feed:
                while not feed.ended:
                    try:
                        await asyncio.wait_for(feed.next(), DISCONNECT_CHECK_S)
                    except TimeoutError:
                        if await request.is_disconnected():
                            break
                assert feed.state is not None
                state = feed.state
        return await self._task(state, context, params.configuration)

    @validate_request_params
    async def on_message_send_stream(self, params: SendMessageRequest, context: ServerCallContext) -> AsyncIterator[Event]:
        state = await self._submit(params, context)
        async with self._feed(context, state.id, start=state) as feed:
            yield await self._task(state, context, params.configuration)
            async for event in self._follow(feed, context):
                yield event

    @validate_request_params
    async def on_subscribe_to_task(self, params: SubscribeToTaskRequest, context: ServerCallContext) -> AsyncIterator[Event]:
        async with self._feed(context, params.id) as feed:
            assert feed.state is not None
            if feed.state.status.terminal:
                raise UnsupportedOperationError(
                    f"task {params.id} is {feed.state.status.value}: there is nothing more to stream (GetTask has it)"
                )
            yield await self._task(feed.state, context)
            async for event in self._follow(feed, context):
                yield event

    @validate_request_params
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        validate_history_length(params)
        gw, principal = _caller(context)
        state, _ = await self._find(gw, principal, params.id)
        return await self._task(state, context, params)

    @validate_request_params
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        gw, principal = _caller(context)
        try:
            state, _ = await cancel(gw, principal, params.id)
        except HTTPException as refused:
            raise _refusal(refused, params.id[:200]) from None
        return await self._task(state, context)

    @validate_request_params
    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        validate_history_length(params)
        if params.context_id or params.HasField("status_timestamp_after"):
            raise UnsupportedOperationError("ListTasks filters by status only (and pages)")
        gw, principal = _caller(context)
        size = params.page_size if params.HasField("page_size") else 50
        if not 1 <= size <= 100:
            raise InvalidParamsError("pageSize must be between 1 and 100")
        token = params.page_token or "0"
        if not token.isdigit() or len(token) > 9:
            raise InvalidParamsError("pageToken is not one this agent gave")
        offset = int(token)
        statuses = a2a_tasks.aether_statuses(params.status) if params.status else None
        summaries, _ = gw.index.page(limit=1_000_000, offset=0, tenant=principal.tenant)
        chosen = [s for s in summaries if statuses is None or s.status in statuses]
        tasks = []
        for summary in chosen[offset : offset + size]:
            with contextlib.suppress(TaskNotFoundError):
                state, _ = await self._find(gw, principal, summary.id)
                task = a2a_tasks.task(state, await artifacts(gw, state, context.state["base_url"]) if params.include_artifacts else ())
                tasks.append(apply_history_length(task, params))
        more = offset + size < len(chosen)
        return ListTasksResponse(
            tasks=tasks, next_page_token=str(offset + size) if more else "", page_size=size, total_size=len(chosen)
        )

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError()

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError()

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError()

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError()

    async def on_get_extended_agent_card(self, params: GetExtendedAgentCardRequest, context: ServerCallContext) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError()


# -- the routes -------------------------------------------------------------------------------

_agent = AetherAgent()
_jsonrpc = JsonRpcDispatcher(_agent, context_builder=_CallContext(), enable_v0_3_compat=True)


async def _bounded(request: Request) -> Request | str:
    """The request with its body read, at most `max_body_bytes` of it (chunked too); else why not."""
    limit = request.app.state.gateway.settings.max_body_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return f"Payload too large: at most {limit} bytes"
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return f"Payload too large: at most {limit} bytes"
    pending: list[ASGIMessage] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

    async def receive() -> ASGIMessage:
        return pending.pop() if pending else await request.receive()

    return Request(request.scope, receive)


@router.post(JSONRPC_PATH, summary="A2A JSON-RPC (protocol 1.0 and 0.3)", include_in_schema=False)
async def a2a_jsonrpc(request: Request) -> Response:
    bounded = await _bounded(request)
    if isinstance(bounded, str):
        return JSONResponse(build_error_response(None, InvalidRequestError(bounded)))
    try:
        json.loads(await bounded.body())
    except RecursionError:
        return JSONResponse(build_error_response(None, JSONParseError(message="JSON nested too deeply")))
    except ValueError:
        pass  # the dispatcher answers it
    return await _jsonrpc.handle_requests(bounded)


def _rest_endpoint(endpoint):
    async def a2a_rest(request: Request) -> Response:
        bounded = await _bounded(request)
        if isinstance(bounded, str):
            payload = build_rest_error_payload(InvalidRequestError(bounded))
            payload["error"]["code"] = 413
            return JSONResponse(payload, status_code=413)
        return await endpoint(bounded)

    return a2a_rest


for _route in create_rest_routes(_agent, context_builder=_CallContext()):
    # The SDK's routes, as routes of the app (the `/{tenant}` mount is left out: the key names it).
    _methods = getattr(_route, "methods", None)
    if _methods:
        _rest = cast("Route", _route)  # a route with methods: the SDK makes them as starlette Routes
        router.add_api_route(
            REST_PREFIX + _rest.path,
            _rest_endpoint(_rest.endpoint),
            methods=sorted(m for m in _methods if m != "HEAD"),
            include_in_schema=False,
            name=f"a2a_rest:{_rest.path}",
        )
