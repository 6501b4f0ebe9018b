"""task.created in -> planning -> plan.ready out."""

from typing import Any

from faststream.nats import NatsMessage, NatsRouter

from aether_contracts import subjects, topology
from aether_contracts.events import PlanReady, ReplanRequested, TaskControl, TaskCreated
from aether_contracts.state import TaskStatus
from aether_core import deadlines, telemetry
from aether_core.service import Runtime, deliveries, settle

from .planning import Planner


def build_router(runtime: Runtime, planner: Planner, *, concurrency: int) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(**runtime.subscription(topology.PLANNER, max_workers=concurrency, batch=1))
    async def on_task_created(event: TaskCreated, msg: NatsMessage) -> None:
        async def give_up(exc: BaseException) -> None:
            await planner.fail(event.task_id, f"planning failed repeatedly: {exc!r}")

        master = planner.registry.master(event.master_id)
        async with settle(msg, topology.PLANNER, give_up=give_up):
            # Published inside the span: the plan is what the first subtasks' spans link to.
            with telemetry.planning(master.name if master else None, task_id=event.task_id, agent_id=event.master_id):
                state = await planner.plan(event, redelivered=deliveries(msg) > 1)
                if state is not None and state.status == TaskStatus.AWAITING_APPROVAL:
                    # Nothing runs yet: the plan waits for a person, at most until its deadline.
                    await deadlines.arm_approval(runtime, state)
                elif state is not None:
                    await runtime.publish(PlanReady(task_id=event.task_id, round=state.round), subjects.PLAN_READY)

    @router.subscriber(**runtime.subscription(topology.PLANNER_REPLAN, max_workers=concurrency, batch=1))
    async def on_replan_requested(event: ReplanRequested, msg: NatsMessage) -> None:
        async with settle(msg, topology.PLANNER_REPLAN):
            attributes: dict[str, Any] = {"aether.replan.subtasks": event.subtask_ids}
            with telemetry.planning(None, task_id=event.task_id, replan=True, **attributes):
                round_ = await planner.replan(event)
                if round_ is not None:
                    await runtime.publish(PlanReady(task_id=event.task_id, round=round_), subjects.PLAN_READY)

    @router.subscriber(subjects.TASK_CONTROL)
    async def on_task_control(control: TaskControl) -> None:
        planner.cancel(control.task_id, control.reason)

    return router
