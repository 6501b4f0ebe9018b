"""The REST gateway: accepts tasks, answers status queries from the KV store, serves the UI."""

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aether_core.mirror import KVMirror
from aether_core.service import Runtime, configure_logging, make_broker
from aether_core.templates import load_registry
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from .deps import Gateway
from .index import TaskIndex
from .routes import agents, health, probes, tasks
from .settings import GatewaySettings

SERVICE = "gateway"
log = logging.getLogger("aether.gateway")


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level)
    registry = load_registry(settings.agents_dir)
    broker = make_broker(settings, SERVICE)
    runtime = Runtime(settings, broker, SERVICE)
    index = TaskIndex()
    services = KVMirror("services")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(registry.agent_types)
        assert runtime.tasks_kv is not None
        assert runtime.services_kv is not None
        await index.start(runtime.tasks_kv)
        await services.start(runtime.services_kv)
        try:
            yield
        finally:
            await services.stop()
            await index.stop()
            await runtime.stop()
            await broker.stop()

    app = FastAPI(
        title="Aether",
        version="0.1.0",
        summary="An orchestrator for coding work done by LLM agents",
        lifespan=lifespan,
    )
    app.state.gateway = Gateway(settings, runtime, registry, index, services)

    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return JSONResponse(
                {"detail": f"request body larger than {settings.max_body_bytes} bytes"},
                status_code=413,
            )
        return await call_next(request)

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

    for module in (tasks, agents, health, probes):
        app.include_router(module.router)

    ui_dir = settings.ui_dir
    if ui_dir is not None and Path(ui_dir, "index.html").is_file():
        app.mount("/", StaticFiles(directory=ui_dir, html=True), name="ui")
    return app


def _json_safe(errors: list[dict]) -> list[dict]:
    safe = []
    for error in errors:
        item = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
        item["loc"] = [str(p) for p in item.get("loc", ())]
        safe.append(item)
    return safe
