"""Requests to the container-manager: stop an agent (the gateway asks when the agent itself does
not answer); and what it hears of the plans, on core NATS (a miss costs a cold start, nothing
more): a plan ready, a subtask or a task finished.

Those subjects are the work stream's: a service's JetStream publish is a request whose reply is
the stream's ack. A FastStream subscriber answers every message that has a reply subject (with an
empty body for a handler returning None), so without `no_reply` this listener raced the stream to
the publisher's inbox, and a win was an empty "ack" (a JSONDecodeError in nats-py and the publish
repeated: the "empty ack under load" seen since these listeners came, and two publish spans for
one finished subtask in the traces whenever it won).
"""

from faststream.nats import NatsRouter

from aether_contracts import subjects
from aether_contracts.events import (
    AgentControl,
    AgentControlReply,
    PlanReady,
    SubtaskFinished,
    TaskFinished,
)

from .manager import PoolManager


def build_router(manager: PoolManager, scope: str) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(subjects.MANAGER_CONTROL)
    async def on_manager_control(request: AgentControl) -> AgentControlReply:
        accepted = await manager.stop_agent(request.agent_id, request.reason)
        return AgentControlReply(
            agent_id=request.agent_id,
            accepted=accepted,
            detail="stopping; work in flight is handed back" if accepted else f"not an agent of {scope}",
        )

    @router.subscriber(subjects.PLAN_READY, no_reply=True)
    async def on_plan_ready(event: PlanReady) -> None:
        manager.plan_ready(event.task_id)

    @router.subscriber(subjects.SUBTASK_FINISHED, no_reply=True)
    async def on_subtask_finished(event: SubtaskFinished) -> None:
        manager.subtask_finished(event.task_id)

    @router.subscriber(subjects.TASK_FINISHED, no_reply=True)
    async def on_task_finished(event: TaskFinished) -> None:
        manager.task_finished(event.task_id)

    return router
