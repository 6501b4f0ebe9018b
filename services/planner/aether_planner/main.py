"""The planner: Jason turns each new task into a validated plan of subtasks."""


from aether_contracts import topology
from aether_core.llm import LLMClient
from aether_core.llm_slots import limit_concurrency
from aether_core.service import Runtime, configure_logging, make_broker, setup_telemetry
from aether_core.stopping import ServiceApp
from aether_core.templates import load_registry

from .handlers import build_router
from .planning import Planner
from .settings import PlannerSettings

SERVICE = "planner"


def create_app(settings: PlannerSettings | None = None) -> ServiceApp:
    settings = settings or PlannerSettings()
    configure_logging(settings.log_level)
    setup_telemetry(settings, SERVICE)
    registry = load_registry(settings.agents_dir)
    broker = make_broker(settings, SERVICE)
    runtime = Runtime(settings, broker, SERVICE, buckets=(topology.TASKS_BUCKET, topology.SERVICES_BUCKET))
    llm = LLMClient(settings.llm_config())
    planner = Planner(
        store=runtime.store,
        llm=llm,
        registry=registry,
        model=settings.model,
        max_subtasks=settings.max_subtasks,
        timeout_s=settings.planning_timeout_s,
        max_tokens=settings.max_tokens,
        fallback=settings.plan_fallback,
    )
    broker.include_router(build_router(runtime, planner, concurrency=settings.planner_concurrency))

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
