"""Two roles, kept apart: the scheduler decides what is ready, workers run subtasks.

scheduler: plan.ready, subtask.finished in -> scheduling -> subtask.ready.<type>, synthesis.requested out
worker:    subtask.ready.<type> in -> running -> subtask.finished out
"""

from collections.abc import Iterable

from aether_contracts import subjects, topology
from aether_contracts.events import (
    PlanReady,
    SubtaskFinished,
    SubtaskReady,
    SynthesisRequested,
    TaskFinished,
)
from aether_contracts.state import TaskState
from aether_core.service import Runtime, deliveries, settle, subscription
from aether_core.store import TaskNotFound
from faststream.nats import NatsMessage, NatsRouter

from . import scheduling
from .running import Worker


async def publish_decision(runtime: Runtime, task_id: str, decision: scheduling.Decision) -> None:
    for subtask in decision.ready:
        await runtime.publish(
            SubtaskReady(
                task_id=task_id,
                subtask_id=subtask.id,
                agent_type=subtask.agent_type,
                dispatch=subtask.dispatches,
            ),
            subjects.subtask_ready(subtask.agent_type),
        )
    if decision.synthesize:
        await runtime.publish(SynthesisRequested(task_id=task_id), subjects.SYNTHESIS_REQUESTED)
    if decision.finished is not None:
        await runtime.publish(
            TaskFinished(task_id=task_id, status=decision.finished.value), subjects.TASK_FINISHED
        )


def build_scheduler_router(runtime: Runtime, *, concurrency: int) -> NatsRouter:
    router = NatsRouter()

    async def decide(task_id: str, change) -> None:
        try:
            mutation = await runtime.store.mutate(task_id, change)
        except TaskNotFound:
            return  # deleted: nothing left to schedule
        await publish_decision(runtime, task_id, mutation.value)

    @router.subscriber(**subscription(topology.SCHEDULER_PLANS, max_workers=concurrency))
    async def on_plan_ready(event: PlanReady, msg: NatsMessage) -> None:
        async with settle(msg, topology.SCHEDULER_PLANS, keep_alive=False):
            await decide(event.task_id, scheduling.start_plan)

    @router.subscriber(**subscription(topology.SCHEDULER_FINISHED, max_workers=concurrency))
    async def on_subtask_finished(event: SubtaskFinished, msg: NatsMessage) -> None:
        def change(state: TaskState) -> scheduling.Decision:
            return scheduling.finish_subtask(state, event)

        async with settle(msg, topology.SCHEDULER_FINISHED, keep_alive=False):
            await decide(event.task_id, change)

    return router


def build_worker_router(
    runtime: Runtime, worker: Worker, agent_types: Iterable[str], *, concurrency: int
) -> NatsRouter:
    router = NatsRouter()

    for agent_type in agent_types:
        spec = topology.worker_consumer(agent_type)
        router.subscriber(**subscription(spec, max_workers=concurrency, batch=1))(
            _subtask_handler(runtime, worker, spec)
        )

    return router


def _subtask_handler(runtime: Runtime, worker: Worker, spec: topology.ConsumerSpec):
    async def on_subtask_ready(event: SubtaskReady, msg: NatsMessage) -> None:
        async def give_up(exc: BaseException) -> None:
            await runtime.publish(worker.give_up(event, exc), subjects.SUBTASK_FINISHED)

        async with settle(msg, spec, give_up=give_up):
            finished = await worker.run(event, redelivered=deliveries(msg) > 1)
            if finished is not None:
                await runtime.publish(finished, subjects.SUBTASK_FINISHED)

    on_subtask_ready.__name__ = f"on_subtask_ready_{spec.durable.replace('-', '_')}"
    return on_subtask_ready
