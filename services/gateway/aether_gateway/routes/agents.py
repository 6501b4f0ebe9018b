from fastapi import APIRouter

from ..deps import GatewayDep
from ..schemas import AgentTemplateBody

router = APIRouter(tags=["agents"])


@router.get(
    "/api/orchestrate/agents",
    response_model=list[AgentTemplateBody],
    summary="List the expert agent templates",
)
async def list_agent_templates(gw: GatewayDep) -> list[AgentTemplateBody]:
    return [AgentTemplateBody(**t.public()) for t in gw.registry.templates.values()]
