"""Two roles, kept apart: the scheduler decides what is ready, workers run subtasks.

scheduler: plan.ready, subtask.finished in -> scheduling -> subtask.ready.<type>, synthesis.requested out
worker:    subtask.ready.<type> in -> running -> subtask.finished out
"""

import asyncio
import logging
from collections.abc import Callable, Iterable

from faststream.nats import NatsMessage, NatsRouter

from aether_contracts import subjects, topology
from aether_contracts.events import (
    AgentControl,
    AgentControlReply,
    PlanReady,
    ReplanRequested,
    SubtaskFinished,
    SubtaskReady,
    SynthesisRequested,
    TaskControl,
    TaskExpired,
    TaskFinished,
)
from aether_contracts.state import TaskState
from aether_core import deadlines, telemetry
from aether_core.service import Runtime, deliveries, settle
from aether_core.store import TaskNotFound

from . import scheduling
from .running import Worker

log = logging.getLogger("aether.executor")


async def publish_decision(
    runtime: Runtime, state: TaskState, decision: scheduling.Decision
) -> None:
    task_id = state.id
    if decision.cancel is not None:
        # Core NATS, best effort: the state already says the task is over.
        await runtime.broker.publish(
            TaskControl(task_id=task_id, action="cancel", reason=decision.cancel), subjects.TASK_CONTROL
        )
    if decision.replan:
        await runtime.publish(
            ReplanRequested(task_id=task_id, subtask_ids=decision.replan, round=state.round),
            subjects.REPLAN_REQUESTED,
        )
    for subtask in decision.ready:
        await runtime.publish(
            SubtaskReady(
                task_id=task_id,
                subtask_id=subtask.id,
                agent_type=subtask.agent_type,
                dispatch=subtask.dispatches,
                resume=subtask.resuming,
            ),
            subjects.subtask_ready(subtask.agent_type),
        )
    if decision.synthesize:
        await runtime.publish(
            SynthesisRequested(task_id=task_id, round=state.round), subjects.SYNTHESIS_REQUESTED
        )
    if decision.finished is not None:
        await runtime.publish(
            TaskFinished(task_id=task_id, status=decision.finished.value, round=state.round),
            subjects.TASK_FINISHED,
        )
    if decision.postpone is not None:
        # The task's deadline fired while a person was asked: it waits with them.
        await deadlines.arm_task(runtime, state, decision.postpone)


def build_scheduler_router(
    runtime: Runtime, *, concurrency: int, policy: scheduling.Policy
) -> NatsRouter:
    router = NatsRouter()

    async def decide(task_id: str, change) -> None:
        try:
            mutation = await runtime.store.mutate(task_id, change)
        except TaskNotFound:
            return  # deleted: nothing left to schedule
        await publish_decision(runtime, mutation.state, mutation.value)

    def processing(spec: topology.ConsumerSpec, task_id: str, subtask_id: str | None = None):
        return telemetry.process(spec.subject, spec.durable, task_id=task_id, subtask_id=subtask_id)

    @router.subscriber(**runtime.subscription(topology.SCHEDULER_PLANS, max_workers=concurrency))
    async def on_plan_ready(event: PlanReady, msg: NatsMessage) -> None:
        async with settle(msg, topology.SCHEDULER_PLANS, keep_alive=False):
            with processing(topology.SCHEDULER_PLANS, event.task_id):
                await decide(event.task_id, lambda s: scheduling.reconcile(s, policy))

    @router.subscriber(**runtime.subscription(topology.SCHEDULER_FINISHED, max_workers=concurrency))
    async def on_subtask_finished(event: SubtaskFinished, msg: NatsMessage) -> None:
        def change(state: TaskState) -> scheduling.Decision:
            return scheduling.finish_subtask(state, event, policy)

        async with settle(msg, topology.SCHEDULER_FINISHED, keep_alive=False):
            with processing(topology.SCHEDULER_FINISHED, event.task_id, event.subtask_id):
                await decide(event.task_id, change)

    @router.subscriber(**runtime.subscription(topology.SCHEDULER_EXPIRED, max_workers=concurrency))
    async def on_task_expired(event: TaskExpired, msg: NatsMessage) -> None:
        async with settle(msg, topology.SCHEDULER_EXPIRED, keep_alive=False):
            with processing(topology.SCHEDULER_EXPIRED, event.task_id):
                await decide(event.task_id, lambda s: scheduling.deadline_passed(s, event, policy))

    return router


def build_worker_router(
    runtime: Runtime,
    worker: Worker,
    agent_types: Iterable[str],
    *,
    concurrency: int,
    request_exit: Callable[[], None],
) -> NatsRouter:
    router = NatsRouter()
    consumers = []

    for agent_type in agent_types:
        spec = topology.worker_consumer(agent_type)
        consumer = router.subscriber(**runtime.subscription(spec, max_workers=concurrency, batch=1))
        consumer(_subtask_handler(runtime, worker, spec))
        consumers.append(consumer)

    @router.subscriber(subjects.TASK_CONTROL)
    async def on_task_control(control: TaskControl) -> None:
        stopped = worker.inflight.cancel(control.task_id, "cancelled")
        if stopped:
            log.info("stopped %d subtask(s) of task %s: %s", len(stopped), control.task_id, control.reason)

    @router.subscriber(subjects.agent_control(worker.agent_id))
    async def on_agent_control(request: AgentControl) -> AgentControlReply:
        if request.action == "stop" and not worker.handing_back:
            asyncio.get_running_loop().create_task(stop(request.reason))
        return AgentControlReply(
            agent_id=worker.agent_id, accepted=True, detail="stopping; work in flight is handed back"
        )

    async def stop(reason: str) -> None:
        log.info("agent %s stopping: %s", worker.agent_id, reason)
        if worker.presence is not None:
            await worker.presence.stopping(reason)
        # Stop pulling first (a subscriber's stop() does that in its first step, then waits for
        # the handlers), or the handed-back message would come straight back to us.
        stopping = [asyncio.create_task(consumer.stop()) for consumer in consumers]
        await asyncio.sleep(0)
        handed = await worker.hand_back()
        await asyncio.wait(stopping, timeout=15)
        log.info("agent %s handed back %d subtask(s)", worker.agent_id, handed)
        request_exit()

    return router


def _subtask_handler(runtime: Runtime, worker: Worker, spec: topology.ConsumerSpec):
    async def on_subtask_ready(event: SubtaskReady, msg: NatsMessage) -> None:
        async def give_up(exc: BaseException) -> None:
            await runtime.publish(worker.give_up(event, exc), subjects.SUBTASK_FINISHED)

        template = worker.registry.template(event.agent_type)
        async with settle(msg, spec, give_up=give_up):
            # Published inside the span: what this subtask makes ready links to it.
            with telemetry.agent(
                template.name if template else event.agent_type,
                task_id=event.task_id,
                agent_id=worker.agent_id,
                model=worker.model,
                **{
                    telemetry.SUBTASK_ID: event.subtask_id,
                    telemetry.AGENT_TYPE: event.agent_type,
                    telemetry.ROLE: "expert",
                    "aether.dispatch": event.dispatch,
                },
            ):
                finished = await worker.run_tracked(event, redelivered=deliveries(msg) > 1)
                if finished is not None:
                    await runtime.publish(finished, subjects.SUBTASK_FINISHED)

    on_subtask_ready.__name__ = f"on_subtask_ready_{spec.durable.replace('-', '_')}"
    return on_subtask_ready
