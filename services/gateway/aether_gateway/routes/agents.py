import contextlib
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from aether_contracts import subjects
from aether_contracts.agents import AgentRecord, AgentStatus, agent_key
from aether_contracts.events import AgentControl, AgentControlReply
from aether_contracts.state import utcnow

from ..auth import visible
from ..deps import AdminDep, Gateway, GatewayDep, PrincipalDep
from ..schemas import AgentBody, AgentStopBody, AgentTemplateBody, ErrorBody

router = APIRouter(tags=["agents"])


@router.get(
    "/api/orchestrate/agents",
    response_model=list[AgentTemplateBody],
    summary="List the expert agent templates",
)
async def list_agent_templates(gw: GatewayDep, principal: PrincipalDep) -> list[AgentTemplateBody]:
    return [AgentTemplateBody(**t.public()) for t in gw.registry.templates.values()]


def pool(gw: Gateway) -> list[AgentRecord]:
    records = []
    for raw in list(gw.agents.values.values()):
        with contextlib.suppress(ValueError):
            records.append(AgentRecord.model_validate_json(raw))
    busy_masters = gw.index.masters_at_work()
    for record in records:
        if record.role == "master":
            record.status = AgentStatus.BUSY if busy_masters.get(record.id) else AgentStatus.IDLE
    order = {"master": 0, "expert": 1}
    return sorted(records, key=lambda r: (order[r.role], r.agent_type, r.started_at, r.id))


@router.get("/api/agents", response_model=list[AgentBody], summary="The agent pool: masters and experts")
async def list_agents(gw: GatewayDep, principal: PrincipalDep) -> list[AgentBody]:
    now = utcnow()
    bodies = []
    for record in pool(gw):
        if record.current_task and not principal.admin and not visible(principal, gw.index.tenant_of(record.current_task)):
            # Busy with another tenant's work: which task is that tenant's business (admins,
            # who manage the pool, see it).
            record.current_task = record.current_subtask = None
        bodies.append(AgentBody(**record.model_dump(), deletable=record.deletable, alive=record.alive(now)))
    return bodies


@router.delete(
    "/api/agents/{agent_id}",
    status_code=202,
    response_model=AgentStopBody,
    responses={
        403: {"model": ErrorBody, "description": "Only admin keys may manage the pool"},
        404: {"model": ErrorBody, "description": "No such agent"},
        409: {"model": ErrorBody, "description": "A master agent cannot be deleted"},
        503: {"model": ErrorBody, "description": "Nobody could stop the agent"},
    },
    summary="Stop an expert agent; its work in flight goes to another agent",
)
async def delete_agent(agent_id: str, gw: GatewayDep, admin: AdminDep) -> Any:
    raw = gw.agents.values.get(agent_key(agent_id))
    record = AgentRecord.model_validate_json(raw) if raw else None
    if record is None or record.id != agent_id:
        raise HTTPException(404, f"no agent with id '{agent_id}'")
    if record.role == "master":
        raise HTTPException(409, f"'{agent_id}' is a master agent and cannot be deleted")
    if record.status in (AgentStatus.STOPPED, AgentStatus.FAILED, AgentStatus.STOPPING):
        return AgentStopBody(id=agent_id, status=record.status, detail="already stopping or stopped")
    request = AgentControl(agent_id=agent_id, action="stop")
    # The agent itself hands its work back and exits; if it does not answer (hung, or still
    # starting), the container-manager that runs it stops its process or container.
    for subject, timeout in ((subjects.agent_control(agent_id), 2.0), (subjects.MANAGER_CONTROL, 3.0)):
        reply = await _ask(gw, request, subject, timeout)
        if reply is not None and reply.accepted:
            return AgentStopBody(id=agent_id, status=AgentStatus.STOPPING, detail=reply.detail)
    return JSONResponse(
        {"detail": f"agent '{agent_id}' did not answer and no container-manager runs it"},
        status_code=503,
    )


async def _ask(gw: Gateway, request: AgentControl, subject: str, timeout: float) -> AgentControlReply | None:
    try:
        response = await gw.runtime.broker.request(request, subject, timeout=timeout)
        return AgentControlReply.model_validate_json(response.body)
    except Exception:
        return None

