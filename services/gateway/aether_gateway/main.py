"""The REST gateway: accepts tasks, answers status queries from the KV store, serves the UI."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from nats import errors as nats_errors
from nats.js import errors as js_errors
from starlette.exceptions import HTTPException as StarletteHTTPException

from aether_contracts import subjects
from aether_contracts.agents import AGENT_RECORD_MAX_AGE_S, AgentRecord, AgentStatus, agent_key
from aether_contracts.events import ToolStep
from aether_contracts.topology import AGENTS_BUCKET, QUOTAS_BUCKET, SERVICES_BUCKET, TASKS_BUCKET
from aether_core.mirror import KVMirror
from aether_core.service import Runtime, configure_logging, make_broker, setup_telemetry
from aether_core.telemetry import instrument_fastapi
from aether_core.templates import Registry, load_registry
from aether_core.workspace_store import WorkspaceStore

from . import a2a_agent
from .auth import KeyRing, LinkSigner, redact_tokens_in_logs
from .bodies import BodyLimit, BodyTooLarge, too_large
from .deps import Gateway, authenticate
from .docs import mount_docs
from .index import TaskIndex
from .mcp_server import MCP_PATH, McpEndpoint
from .metrics import GatewayMetrics
from .quota import ActiveTasks
from .routes import agents as agent_routes
from .routes import files, health, observability, probes, steps, stream, tasks
from .settings import GatewaySettings
from .streams import StreamHub
from .ui import MissionBoard

SERVICE = "gateway"
log = logging.getLogger("aether.gateway")

POLLED_READS = (
    "GET /api/orchestrate/task/{task_id}",
    "GET /api/orchestrate/tasks",
    "GET /api/orchestrate/task/{task_id}/subtasks/{subtask_id}/steps",
    "GET /api/orchestrate/agents",
    "GET /api/agents",
    "GET /api/config",
    "GET",  # no route: the Mission Board's files
)
"""Reads that clients poll (the CLI's status, the board's lists and files): each would be a trace
of one span (server span names, as the FastAPI instrumentation makes them)."""

NATS_UNAVAILABLE = (
    TimeoutError,  # nats.errors.TimeoutError is one
    nats_errors.NoRespondersError,
    nats_errors.NoServersError,
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.StaleConnectionError,
    js_errors.ServiceUnavailableError,
    js_errors.NoStreamResponseError,
)
"""NATS not answering for now: a node cut off, a stream leader being elected (issue 18)."""
NATS_RETRY_AFTER_S = 2

SECURITY_HEADERS = {
    # The board and the docs load only their own files; nothing may frame them.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level)
    setup_telemetry(settings, SERVICE)
    registry = load_registry(settings.agents_dir)
    keys = KeyRing.load(enabled=settings.auth, keys=settings.api_keys, keys_file=settings.api_keys_file)
    broker = make_broker(settings, SERVICE)
    runtime = Runtime(settings, broker, SERVICE, buckets=(TASKS_BUCKET, SERVICES_BUCKET, AGENTS_BUCKET, QUOTAS_BUCKET))
    index = TaskIndex()
    streams = StreamHub(per_client=settings.streams_per_client, total=settings.streams_total)
    index.listeners.append(streams.on_change)
    services = KVMirror("services")
    agent_pool = KVMirror("agents")
    mcp = McpEndpoint(settings, keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # After uvicorn configured its loggers: they would log stream URLs with their API keys.
        redact_tokens_in_logs("uvicorn.error", "uvicorn.access")
        await runtime.start()
        assert runtime.js is not None
        assert runtime.tasks_kv is not None
        assert runtime.services_kv is not None
        assert runtime.agents_kv is not None
        await index.start(runtime.tasks_kv)
        app.state.gateway.quota.bind(await runtime.js.key_value(QUOTAS_BUCKET))
        await services.start(runtime.services_kv)
        await agent_pool.start(runtime.agents_kv)
        masters = asyncio.create_task(keep_masters_listed(runtime, registry))

        async def on_step(message) -> None:
            with contextlib.suppress(ValueError):
                streams.on_step(ToolStep.model_validate_json(message.data))

        # Experts' steps, live, for the task streams (core NATS: what the stream stores, as it is stored).
        step_feed = await runtime.broker.connection.subscribe(f"{subjects.STEP_PREFIX}.>", cb=on_step)
        try:
            async with mcp.running():
                yield
        finally:
            with contextlib.suppress(Exception):
                await step_feed.unsubscribe()
            masters.cancel()
            await agent_pool.stop()
            await services.stop()
            await index.stop()
            await runtime.stop()
            await broker.stop()

    app = FastAPI(
        title="Aether",
        version="0.1.0",
        summary="An orchestrator for coding work done by LLM agents",
        lifespan=lifespan,
        # Every route needs a key but auth.OPEN_PATHS: a route added later is closed by default.
        dependencies=[Depends(authenticate)],
        # Served from this process (docs.py), not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = Gateway(
        settings,
        runtime,
        registry,
        index,
        services,
        agent_pool,
        keys,
        GatewayMetrics(runtime, index, agent_pool, registry, streams),
        streams,
        WorkspaceStore(lambda: runtime.js),
        LinkSigner(keys.secret("download-links"), settings.download_link_ttl_s),
        ActiveTasks(index, runtime.store, settings.max_active_tasks),
    )

    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    # Counted as it arrives, whatever its encoding: a chunked body was read whole however large.
    # /mcp and the A2A endpoints count their own and answer in their protocol's errors.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        exempt=lambda path: path == MCP_PATH or a2a_agent.sizes_its_own_body(path),
    )

    # Added last, so it wraps every answer, a 413 included.
    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in errors
        )
        return JSONResponse(
            {"detail": message, "errors": _json_safe(errors)}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def readable_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # Starlette's answer to an undecodable body; everything else about a bad body is 422.
            return JSONResponse({"detail": "body: the request body is not valid JSON"}, status_code=422)
        if isinstance(exc, BodyTooLarge):  # counted past the limit: the rest is not taken
            return too_large(settings.max_body_bytes, close=True)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def nats_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: NATS unavailable: %r", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"the task store (NATS JetStream) is not answering ({type(exc).__name__}): retry shortly"},
            status_code=503,
            headers={"Retry-After": str(NATS_RETRY_AFTER_S)},
        )

    for unavailable in NATS_UNAVAILABLE:
        app.add_exception_handler(unavailable, nats_unavailable)

    for module in (tasks, steps, stream, files, agent_routes, health, probes, observability, a2a_agent):
        app.include_router(module.router)
    app.router.routes.append(mcp.route)
    mount_docs(app)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            # Our 422s carry a readable `detail` string and the raw errors beside it.
            components["HTTPValidationError"] = {
                "title": "HTTPValidationError",
                "type": "object",
                "properties": {
                    "detail": {"type": "string"},
                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                },
                "required": ["detail"],
            }
            # The masters are configured, not fixed: say which ones this deployment knows; and
            # document the description's limits, checked in the route with readable messages.
            submission = components.get("TaskSubmission", {}).get("properties", {})
            if "description" in submission:
                submission["description"].update(
                    minLength=1, maxLength=settings.max_description_chars, pattern=r"\S"
                )
            if "master_deployment_id" in submission:
                submission["master_deployment_id"] = {
                    "anyOf": [{"type": "string", "enum": sorted(registry.masters)}, {"type": "null"}],
                    "title": "Master Deployment Id",
                    "description": "The master agent that plans and synthesizes; default `jason`.",
                }
            app.openapi_schema = stream.document_stream_messages(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Probes and scrapes are not traced, and polled reads start no trace: they would bury the
    # tasks' traces (a board or a CLI reads a task every second while it runs).
    instrument_fastapi(app, excluded_urls="/api/health,/metrics,/livez,/readyz", untraced_reads=POLLED_READS)

    ui_dir = settings.ui_dir
    if ui_dir is not None and Path(ui_dir, "index.html").is_file():
        app.mount("/", MissionBoard(str(ui_dir)), name="ui")
    return app


async def keep_masters_listed(runtime: Runtime, registry: Registry) -> None:
    """Masters are configured, not started: list them in the pool (the bucket forgets records a
    minute after their last write, so rewrite them while the gateway runs)."""
    kv = runtime.agents_kv
    assert kv is not None  # opened by `runtime.start()`, which comes first
    while True:
        for master in registry.masters.values():
            record = AgentRecord(
                id=master.id,
                name=master.name,
                role="master",
                agent_type=master.id,
                backend="builtin",
                status=AgentStatus.IDLE,
                started_at=runtime.started_at,
            )
            try:
                await kv.put(agent_key(master.id), record.to_bytes())
            except Exception as exc:
                log.warning("could not list master %s: %r", master.id, exc)
        await asyncio.sleep(AGENT_RECORD_MAX_AGE_S / 3)


def _json_safe(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    safe = []
    for error in errors:
        item = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
        item["loc"] = [str(p) for p in item.get("loc", ())]
        safe.append(item)
    return safe
