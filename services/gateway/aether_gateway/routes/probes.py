"""The gateway's own probes, for an orchestrator deciding about this one process.

`/api/health` answers for the whole system (every service alive), which is the wrong question
for a pod: a gateway would be taken out of its Service whenever a planner restarts. `/readyz`
asks only what this process needs to serve requests: NATS connected and the KV store answering.
"""

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..deps import GatewayDep

router = APIRouter(tags=["probes"])


@router.get("/livez", response_class=PlainTextResponse, summary="The process serves HTTP")
async def livez() -> str:
    return "ok\n"


@router.get(
    "/readyz",
    response_class=PlainTextResponse,
    responses={503: {"description": "NATS or the KV store does not answer"}},
    summary="NATS is connected and the KV store answers",
)
async def readyz(gw: GatewayDep) -> PlainTextResponse:
    try:
        ready = await asyncio.wait_for(gw.runtime.ready(), timeout=3)
    except Exception:
        ready = False
    if ready:
        return PlainTextResponse("ready\n")
    return PlainTextResponse("not ready\n", status_code=503)
