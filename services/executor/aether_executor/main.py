"""The executor: a scheduler that dispatches subtasks as soon as their dependencies are done,
and workers (agents) that run them, one durable consumer per agent type."""

from aether_core.llm import LLMClient
from aether_core.service import Runtime, configure_logging, make_broker
from aether_core.templates import load_registry
from faststream import FastStream

from .handlers import build_scheduler_router, build_worker_router
from .running import Worker
from .settings import ExecutorSettings

SERVICE = "executor"


def create_app(settings: ExecutorSettings | None = None) -> FastStream:
    settings = settings or ExecutorSettings()
    configure_logging(settings.log_level)
    registry = load_registry(settings.agents_dir)
    role = settings.executor_role
    service = SERVICE if role != "worker" else "agent"
    broker = make_broker(settings, service)
    runtime = Runtime(settings, broker, service)
    closers = []

    if role in ("all", "scheduler"):
        broker.include_router(
            build_scheduler_router(runtime, concurrency=settings.scheduler_concurrency)
        )
    if role in ("all", "worker"):
        served = settings.served_types(registry.agent_types)
        llm = LLMClient(settings.llm_config())
        closers.append(llm.close)
        worker = Worker(
            runtime.store,
            llm,
            registry,
            agent_id=settings.agent_id or settings.instance_id,
            model=settings.model,
            timeout_s=settings.subtask_timeout_s,
        )
        runtime.detail.update(
            {"role": role, "agent_types": served, "agent_id": worker.agent_id}
        )
        broker.include_router(
            build_worker_router(runtime, worker, served, concurrency=settings.worker_concurrency)
        )
    else:
        runtime.detail["role"] = role

    async def startup() -> None:
        await runtime.start(registry.agent_types)

    async def shutdown() -> None:
        await runtime.stop()
        for close in closers:
            await close()

    return FastStream(broker, on_startup=[startup], after_shutdown=[shutdown])
