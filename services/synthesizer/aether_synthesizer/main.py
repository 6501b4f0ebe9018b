"""The synthesizer: Jason integrates the experts' results into the task's final answer."""

import sys
from pathlib import Path

from aether_contracts import topology
from aether_core.llm import LLMClient
from aether_core.llm_slots import limit_concurrency
from aether_core.sandbox import SandboxLimits, detect
from aether_core.service import Runtime, configure_logging, make_broker, setup_telemetry
from aether_core.stopping import ServiceApp
from aether_core.templates import load_registry
from aether_core.workspace_store import WorkspaceStore

from .handlers import build_router
from .repository import Repository
from .settings import SynthesizerSettings
from .synthesis import Synthesizer

SERVICE = "synthesizer"


def create_app(settings: SynthesizerSettings | None = None) -> ServiceApp:
    settings = settings or SynthesizerSettings()
    configure_logging(settings.log_level)
    setup_telemetry(settings, SERVICE)
    registry = load_registry(settings.agents_dir)
    broker = make_broker(settings, SERVICE)
    runtime = Runtime(settings, broker, SERVICE, buckets=(topology.TASKS_BUCKET, topology.SERVICES_BUCKET))
    llm = LLMClient(settings.llm_config())
    synthesizer = Synthesizer(
        runtime.store,
        llm,
        registry,
        model=settings.model,
        timeout_s=settings.synthesis_timeout_s,
        max_tokens=settings.max_tokens,
        token_budget=settings.task_token_budget,
        sandbox=detect(kind=settings.sandbox, toolchain=sorted({Path(sys.prefix), Path(sys.base_prefix)}), concurrency=settings.sandbox_concurrency) if settings.verify_repository else None,
        check_limits=SandboxLimits(timeout_s=settings.check_timeout_s, cpu_s=settings.check_timeout_s,
                                   memory_bytes=settings.sandbox_memory_mb << 20, processes=settings.sandbox_processes),
        max_fixups=settings.max_fixups,
        repository=Repository(WorkspaceStore(lambda: runtime.js), settings.file_limits()),
    )
    broker.include_router(
        build_router(runtime, synthesizer, concurrency=settings.synthesizer_concurrency)
    )

    async def startup() -> None:
        await runtime.start()
        await limit_concurrency(llm, runtime.js, settings.openai_base_url, settings.llm_max_concurrency)

    async def shutdown() -> None:
        await runtime.stop()
        await llm.close()

    return ServiceApp(
        broker, stop_timeout_s=settings.stop_timeout_s, name=SERVICE,
        on_startup=[startup], after_shutdown=[shutdown],
    )
