"""Requests to the container-manager: stop an agent (the gateway asks when the agent itself does
not answer)."""

from faststream.nats import NatsRouter

from aether_contracts import subjects
from aether_contracts.events import AgentControl, AgentControlReply

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

    return router
