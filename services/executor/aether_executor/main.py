"""The executor: a scheduler that dispatches subtasks as soon as their dependencies are done,
and workers (agents) that run them, one durable consumer per agent type."""

import logging
import sys
from pathlib import Path
from typing import cast

from nats.js.kv import KeyValue

from aether_contracts import subjects, topology
from aether_contracts.agents import ANY_TYPE, AgentRecord
from aether_contracts.state import utcnow
from aether_core import deadlines
from aether_core.llm import LLMClient
from aether_core.llm_slots import limit_concurrency
from aether_core.mirror import KVMirror
from aether_core.sandbox import detect
from aether_core.service import Runtime, configure_logging, make_broker, setup_telemetry
from aether_core.stopping import ServiceApp
from aether_core.templates import load_registry
from aether_core.workspace_store import WorkspaceStore

from . import scheduling
from .acting import ActLimits
from .handlers import build_scheduler_router, build_worker_router
from .presence import Presence
from .running import Worker
from .settings import ExecutorSettings
from .workspace import FILE_CACHE_BYTES, Workspace

SERVICE = "executor"
log = logging.getLogger("aether.agent")


def create_app(settings: ExecutorSettings | None = None) -> ServiceApp:
    settings = settings or ExecutorSettings()
    configure_logging(settings.log_level)
    setup_telemetry(settings, SERVICE)
    registry = load_registry(settings.agents_dir)
    role = settings.executor_role
    service = SERVICE if role != "worker" else "agent"
    broker = make_broker(settings, service)
    runtime = Runtime(
        settings, broker, service, buckets=(topology.TASKS_BUCKET, topology.SERVICES_BUCKET, topology.AGENTS_BUCKET)
    )
    runtime.detail["role"] = role

    def agents_kv() -> KeyValue:
        """The agents bucket: `runtime.start()` opened it (in `buckets`) before the starters run."""
        return cast(KeyValue, runtime.agents_kv)

    agents = KVMirror("agents")
    app_ref: list[ServiceApp] = []
    starters, stoppers = [], []

    if role in ("all", "scheduler"):

        def has_agent(agent_type: str) -> bool:
            now = utcnow()
            for raw in list(agents.values.values()):
                record = AgentRecord.model_validate_json(raw)
                if record.serves(agent_type) and record.alive(now):
                    return True
            return False

        policy = scheduling.Policy(
            has_agent=has_agent,
            auto_replan=settings.auto_replan,
            token_budget=settings.task_token_budget,
        )
        broker.include_router(
            build_scheduler_router(runtime, concurrency=settings.scheduler_concurrency, policy=policy)
        )
        starters.append(lambda: agents.start(agents_kv()))
        stoppers.append(agents.stop)

    if role in ("all", "worker"):
        served = settings.served_types(registry.agent_types)
        agent_id = settings.agent_id or settings.instance_id
        everything = role == "all" or served == registry.agent_types
        presence = Presence(
            agent_id,
            ANY_TYPE if everything else ",".join(served),
            settings.agent_runtime,
            settings.agent_runtime_id,
        )
        llm = LLMClient(settings.llm_config())
        # The agent's own Python (its tools, pytest among them) is what commands find first.
        sandbox = detect(
            kind=settings.sandbox,
            toolchain=sorted({Path(sys.prefix), Path(sys.base_prefix)}),
            concurrency=settings.sandbox_concurrency,
        )
        if settings.expert_tools and not sandbox.available:
            log.warning("experts' commands cannot run on this agent: %s (run_command is refused)", sandbox.reason)
        worker = Worker(
            runtime.store,
            llm,
            registry,
            agent_id=agent_id,
            model=settings.model,
            timeout_s=settings.subtask_timeout_s,
            max_tokens=settings.max_tokens,
            token_budget=settings.task_token_budget,
            sandbox=sandbox,
            sandbox_limits=settings.sandbox_limits(),
            act_limits=ActLimits(
                max_steps=settings.expert_max_steps,
                max_tool_errors=settings.expert_max_tool_errors,
                fix_rounds=settings.expert_fix_rounds,
                check_timeout_s=settings.check_timeout_s,
            ),
            tools=settings.expert_tools,
            publish_step=lambda step: runtime.record(step, subjects.step(step.task_id, step.subtask_id)),
            arm_question=lambda state, subtask_id, number, timeout, at: deadlines.arm_question(
                runtime, state, subtask_id, number, timeout, at
            ),
            workspace=Workspace(
                WorkspaceStore(lambda: runtime.js, cache_bytes=FILE_CACHE_BYTES),
                settings.file_limits(),
                settings.workspace_path,
            ),
            presence=presence,
        )
        runtime.detail.update({"agent_types": served, "agent_id": agent_id})
        broker.include_router(
            build_worker_router(
                runtime,
                worker,
                served,
                concurrency=settings.worker_concurrency,
                request_exit=lambda: app_ref[0].exit(),
            )
        )
        starters.append(lambda: presence.start(agents_kv()))
        starters.append(lambda: limit_concurrency(llm, runtime.js, settings.openai_base_url, settings.llm_max_concurrency))
        stoppers += [presence.stop, llm.close]

    async def startup() -> None:
        await runtime.start()
        for start in starters:
            await start()

    async def shutdown() -> None:
        for stop in stoppers:
            await stop()
        await runtime.stop()

    app = ServiceApp(
        broker, stop_timeout_s=settings.stop_timeout_s, name=SERVICE,
        on_startup=[startup], after_shutdown=[shutdown],
    )
    app_ref.append(app)
    return app
