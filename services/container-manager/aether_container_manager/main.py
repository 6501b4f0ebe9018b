"""The container-manager: a warm pool of expert agents per agent type, scaled with the queue."""

import asyncio
import contextlib
import logging

from aether_contracts import subjects, topology
from aether_contracts.events import AgentControl, AgentControlReply, AgentEvent
from aether_core.mirror import KVMirror
from aether_core.service import Runtime, configure_logging, make_broker, setup_telemetry
from aether_core.stopping import ServiceApp
from aether_core.templates import load_registry

from .backends import AgentBackend, DockerBackend, ProcessBackend
from .handlers import build_router
from .manager import PoolManager
from .pool import PoolPolicy, parse_overrides
from .settings import ContainerManagerSettings

SERVICE = "container-manager"
log = logging.getLogger("aether.container_manager")


def make_backend(settings: ContainerManagerSettings) -> AgentBackend:
    if settings.agent_backend == "docker":
        backend = DockerBackend(
            settings.scope,
            image=settings.agent_image,
            network=settings.docker_network,
            memory=settings.agent_memory,
            cpus=settings.agent_cpus,
            pids=settings.agent_pids,
            user=settings.agent_user,
        )
        backend.check_image()
        return backend
    return ProcessBackend(settings.scope, settings.agent_log_dir, settings.process_environment())


def create_app(settings: ContainerManagerSettings | None = None) -> ServiceApp:
    settings = settings or ContainerManagerSettings()
    configure_logging(settings.log_level)
    setup_telemetry(settings, SERVICE)
    registry = load_registry(settings.agents_dir)
    base = PoolPolicy(
        min_agents=settings.pool_min,
        max_agents=settings.pool_max,
        backlog_per_agent=settings.backlog_per_agent,
        idle_timeout_s=settings.pool_idle_timeout_s,
    )
    policies = parse_overrides(settings.pool_overrides, base, registry.agent_types)
    backend = make_backend(settings)
    broker = make_broker(settings, SERVICE)
    runtime = Runtime(
        settings, broker, SERVICE, buckets=(topology.SERVICES_BUCKET, topology.AGENTS_BUCKET, topology.TASKS_BUCKET)
    )
    runtime.detail.update({"backend": backend.name, "scope": settings.scope})
    agents = KVMirror("agents")
    loop_task: list[asyncio.Task] = []

    async def publish(event: AgentEvent) -> None:
        await runtime.publish(event, subjects.agent_event(event.kind))

    async def ask_agent(agent_id: str, reason: str) -> bool:
        request = AgentControl(agent_id=agent_id, action="stop", reason=reason)
        try:
            reply = await broker.request(request, subjects.agent_control(agent_id), timeout=2)
        except Exception:
            return False
        return AgentControlReply.model_validate_json(reply.body).accepted

    async def read_task(task_id: str):
        found = await runtime.store.get(task_id)
        return found[0] if found else None

    manager = PoolManager(
        backend,
        policies,
        agents=agents,
        publish=publish,
        ask_agent=ask_agent,
        agent_env={
            **settings.agent_environment(),
            "AETHER_WORKER_CONCURRENCY": str(settings.subtasks_per_agent),
        },
        start_timeout_s=settings.agent_start_timeout_s,
        stop_timeout_s=settings.agent_stop_timeout_s,
        read_task=read_task,
        max_starting=settings.max_starting,
    )
    broker.include_router(build_router(manager, settings.scope))

    async def startup() -> None:
        await runtime.start()
        assert runtime.js is not None and runtime.agents_kv is not None  # opened by start (in `buckets`)
        manager.bind(runtime.js, runtime.agents_kv)
        await agents.start(runtime.agents_kv)
        # Adopting before the pool's records are loaded would take live agents for dead ones.
        await asyncio.wait_for(agents.ready.wait(), 30)
        await manager.reconcile()

    async def after_startup() -> None:
        loop_task.append(asyncio.create_task(manager.run(settings.pool_interval_s)))

    async def shutdown() -> None:
        for task in loop_task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if settings.stop_agents_on_exit:
            await manager.shutdown()

    async def after_shutdown() -> None:
        await agents.stop()
        await runtime.stop()
        await backend.close()

    return ServiceApp(
        broker,
        stop_timeout_s=settings.stop_timeout_s,
        name=SERVICE,
        on_startup=[startup],
        after_startup=[after_startup],
        on_shutdown=[shutdown],
        after_shutdown=[after_shutdown],
    )
