"""Live progress: one task's events, or every task's summary, over Server-Sent Events or WebSocket.

Both transports share a path and send the same messages (see the stream models in `schemas.py`);
the fan-out and the resume rules live in `streams.py`.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import HTTPConnection

from ..auth import Principal, visible
from ..deps import Gateway, GatewayDep, PrincipalDep, websocket_principal
from ..metrics import STREAMS_REFUSED
from ..schemas import STREAM_MESSAGES, ErrorBody, StreamError, StreamErrorMessage
from ..streams import BoardFeed, TaskFeed, TooManyStreams, resume_position
from .tasks import plausible_task_id

router = APIRouter(prefix="/api/orchestrate", tags=["streams"])

BOARD_NEWEST_MAX = 500
WS_UNSUPPORTED_DATA = 1003
WS_MAX_MESSAGE_BYTES = 4096
"""The largest WebSocket frame the gateway reads (uvicorn's `ws_max_size`): a client sends none."""

TASK_STREAM_DOC = """Server-Sent Events: `task.event` for every entry of the task's history (`id` is its
`seq`), then `task.state` (the task without its logs) after each change, and `task.end` when the
task has finished, after which the server closes the stream.

Resume with the `Last-Event-ID` header (what `EventSource` sends when it reconnects) or `?after=`:
every event after that `seq` is sent once, in order. The same path answers a WebSocket upgrade
with the same messages as JSON text frames `{type, id, data}` (resume with `?after=`).

Message schemas: `TaskEventMessage`, `TaskStateMessage`, `TaskEndMessage`, `StreamErrorMessage`."""

BOARD_STREAM_DOC = """Server-Sent Events: `board.task` with a task's summary after each change (`id` is the
KV revision), `board.removed` for a deleted task, and once `board.ready` when the backlog is sent.

Without a position the backlog is the `limit` newest tasks; with `Last-Event-ID` or `?after=` it is
every task that changed after that revision, each once, oldest change first. The same path answers
a WebSocket upgrade with the same messages as JSON text frames `{type, id, data}`.

Message schemas: `BoardTaskMessage`, `BoardRemovedMessage`, `BoardReadyMessage`."""

POSITION_DOC = "Resume after this position (the `id` of the last message received)."
# The stream routes' response class is text/event-stream, which FastAPI would also give the
# errors' `model`: errors are JSON, so their content is spelled out.
_ERROR_JSON = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}}
BAD_REQUEST: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key (`?access_token=` works where headers cannot be set)", "content": _ERROR_JSON},
    404: {"description": "No task with this id", "content": _ERROR_JSON},
    422: {"description": "Malformed resume position", "content": _ERROR_JSON},
    429: {
        "description": "Too many live streams open: the client's (AETHER_STREAMS_PER_CLIENT) or the gateway's "
        "(AETHER_STREAMS_TOTAL)",
        "content": _ERROR_JSON,
    },
}
RETRY_AFTER_S = 5
# A position is the decimal `id` of a message. The schema says so (for client generators and
# schemathesis); the check itself is resume_position, whose message says what is expected.
POSITION_PATTERN = r"^[0-9]{0,18}$"


def _position(after: str | None, last_event_id: str | None) -> int | None:
    try:
        if last_event_id not in (None, ""):
            # EventSource keeps the URL it was opened with: the header is the newer position.
            return resume_position(last_event_id, "Last-Event-ID")
        return resume_position(after)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


def stream_client(principal: Principal, connection: HTTPConnection) -> str:
    """Who a stream counts against: its tenant, or its address when authentication is off."""
    if principal.tenant is not None:
        return f"tenant '{principal.tenant}'"
    return f"address {connection.client.host if connection.client else 'unknown'}"


@contextlib.contextmanager
def admitted(gw: Gateway, principal: Principal, connection: HTTPConnection) -> Iterator[None]:
    """One of the streams the caller may have open, for the block; HTTP 429 when none is left."""
    try:
        with gw.streams.admit(stream_client(principal, connection)):
            yield
    except TooManyStreams as refused:  # raised on entering: nothing in the block raises it
        STREAMS_REFUSED.labels(refused.limit).inc()
        raise HTTPException(429, refused.detail, headers={"Retry-After": str(RETRY_AFTER_S)}) from None


@contextlib.asynccontextmanager
async def open_task_feed(
    gw: Gateway, principal: Principal, task_id: str, after: int | None
) -> AsyncIterator[TaskFeed | None]:
    """The task's feed, subscribed before its current state is read; None if there is no task
    (another tenant's task does not exist for the caller)."""
    with gw.streams.task_feed(task_id, after or 0) as feed:
        found = await gw.store.get(task_id) if plausible_task_id(task_id) else None
        if found is not None and not visible(principal, found[0].tenant):
            found = None
        if found is not None:
            feed.offer(*found)
        yield feed if found is not None else None


async def task_feed(
    task_id: str,
    request: Request,
    gw: GatewayDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(description=POSITION_DOC, json_schema_extra={"pattern": POSITION_PATTERN})] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AsyncIterator[TaskFeed]:
    position = _position(after, last_event_id)
    with admitted(gw, principal, request):
        async with open_task_feed(gw, principal, task_id, position) as feed:
            if feed is None:
                raise HTTPException(404, f"no task with id '{task_id}'")
            yield feed


async def board_feed(
    request: Request,
    gw: GatewayDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(description=POSITION_DOC, json_schema_extra={"pattern": POSITION_PATTERN})] = None,
    limit: Annotated[int, Query(ge=1, le=BOARD_NEWEST_MAX, description="Backlog size without a position.")] = 50,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AsyncIterator[BoardFeed]:
    position = _position(after, last_event_id)
    with admitted(gw, principal, request), gw.streams.board_feed(position, newest=limit, tenant=principal.tenant) as feed:
        yield feed


def _sse(message: BaseModel) -> ServerSentEvent:
    kind = message.type  # type: ignore[attr-defined]
    data = message.data  # type: ignore[attr-defined]
    return ServerSentEvent(event=kind, id=message.id, raw_data=data.model_dump_json())  # type: ignore[attr-defined]


@router.get(
    "/task/{task_id}/stream",
    response_class=EventSourceResponse,
    responses=BAD_REQUEST,
    summary="Follow a task live (SSE or WebSocket)",
    description=TASK_STREAM_DOC,
)
async def stream_task(feed: Annotated[TaskFeed, Depends(task_feed)]) -> AsyncIterator[ServerSentEvent]:
    while messages := await feed.next():
        for message in messages:
            yield _sse(message)


@router.get(
    "/tasks/stream",
    response_class=EventSourceResponse,
    responses={401: BAD_REQUEST[401], 422: BAD_REQUEST[422], 429: BAD_REQUEST[429]},
    summary="Follow every task live (SSE or WebSocket)",
    description=BOARD_STREAM_DOC,
)
async def stream_board(feed: Annotated[BoardFeed, Depends(board_feed)]) -> AsyncIterator[ServerSentEvent]:
    while True:
        for message in await feed.next():
            yield _sse(message)


@router.websocket("/task/{task_id}/stream")
async def stream_task_ws(websocket: WebSocket, task_id: str) -> None:
    gw: Gateway = websocket.app.state.gateway
    await websocket.accept()
    try:
        principal = websocket_principal(websocket)
        position = resume_position(websocket.query_params.get("after"))
    except HTTPException as exc:
        return await _refuse(websocket, exc.status_code, str(exc.detail))
    except ValueError as exc:
        return await _refuse(websocket, 422, str(exc))
    try:
        with admitted(gw, principal, websocket):
            async with open_task_feed(gw, principal, task_id, position) as feed:
                if feed is None:
                    return await _refuse(websocket, 404, f"no task with id '{task_id}'")
                await _pump(websocket, feed.next)
    except HTTPException as refused:
        await _refuse(websocket, refused.status_code, str(refused.detail))


@router.websocket("/tasks/stream")
async def stream_board_ws(websocket: WebSocket) -> None:
    gw: Gateway = websocket.app.state.gateway
    await websocket.accept()
    try:
        principal = websocket_principal(websocket)
        position = resume_position(websocket.query_params.get("after"))
        limit = resume_position(websocket.query_params.get("limit"), "limit") or 50
        if not 1 <= limit <= BOARD_NEWEST_MAX:
            raise ValueError(f"limit must be between 1 and {BOARD_NEWEST_MAX}")
    except HTTPException as exc:
        return await _refuse(websocket, exc.status_code, str(exc.detail))
    except ValueError as exc:
        return await _refuse(websocket, 422, str(exc))
    try:
        with admitted(gw, principal, websocket), gw.streams.board_feed(
            position, newest=limit, tenant=principal.tenant
        ) as feed:
            await _pump(websocket, feed.next)
    except HTTPException as refused:
        await _refuse(websocket, refused.status_code, str(refused.detail))


async def _refuse(websocket: WebSocket, status: int, detail: str) -> None:
    # Accepted first so the client reads why: a refused handshake only says "403".
    await websocket.send_text(StreamErrorMessage(data=StreamError(status=status, detail=detail)).model_dump_json())
    await websocket.close(code=4000 + status, reason=detail[:120])


async def _pump(websocket: WebSocket, next_messages: Callable[[], Awaitable[Sequence[BaseModel]]]) -> None:
    """Send until the feed ends or the client leaves, whichever comes first."""

    async def send() -> None:
        while messages := await next_messages():
            for message in messages:
                await websocket.send_text(message.model_dump_json())

    async def client_left() -> None:
        # Reading is how a closed connection is noticed at once. A client has nothing to send
        # (the position is in the URL): a data frame is refused, not read and dropped, so no
        # client keeps the gateway busy with them (the server also caps a frame's size).
        message = await websocket.receive()
        if message["type"] != "websocket.disconnect":
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.close(code=WS_UNSUPPORTED_DATA, reason="this stream accepts no messages")

    sender = asyncio.create_task(send())
    watcher = asyncio.create_task(client_left())
    done, pending = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await task
    if sender in done:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            sender.result()
            await websocket.close(code=1000)


def document_stream_messages(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the stream messages to the OpenAPI components, so clients can generate their types."""
    _, schema = models_json_schema(
        [(model, "serialization") for model in STREAM_MESSAGES],
        ref_template="#/components/schemas/{model}",
    )
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schema.get("$defs", {}).items():
        schemas.setdefault(name, definition)
    return openapi
