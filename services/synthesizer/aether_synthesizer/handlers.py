"""synthesis.requested in -> synthesis -> task.finished out."""

from typing import Any

from faststream.nats import NatsMessage, NatsRouter

from aether_contracts import subjects, topology
from aether_contracts.events import PlanReady, SynthesisRequested, TaskControl
from aether_core import telemetry
from aether_core.service import Runtime, deliveries, settle

from .synthesis import Synthesizer


def build_router(runtime: Runtime, synthesizer: Synthesizer, *, concurrency: int) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(**runtime.subscription(topology.SYNTHESIZER, max_workers=concurrency, batch=1))
    async def on_synthesis_requested(event: SynthesisRequested, msg: NatsMessage) -> None:
        async with settle(msg, topology.SYNTHESIZER):
            # Jason at work; named once the task's state says which master it is (synthesis.py).
            attributes: dict[str, Any] = {telemetry.ROLE: "synthesizer", telemetry.ROUND: event.round}
            with telemetry.agent(None, task_id=event.task_id, model=synthesizer.model, **attributes):
                outcome = await synthesizer.synthesize(event, redelivered=deliveries(msg) > 1)
                if isinstance(outcome, PlanReady):  # the repository failed its checks: a fix-up runs
                    await runtime.publish(outcome, subjects.PLAN_READY)
                elif outcome is not None:
                    await runtime.publish(outcome, subjects.TASK_FINISHED)

    @router.subscriber(subjects.TASK_CONTROL)
    async def on_task_control(control: TaskControl) -> None:
        synthesizer.cancel(control.task_id, control.reason)

    return router
