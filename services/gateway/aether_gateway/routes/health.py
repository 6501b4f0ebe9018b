import asyncio
import contextlib
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from aether_contracts.services import REQUIRED_SERVICES, ServiceHeartbeat
from aether_contracts.state import utcnow
from aether_contracts.topology import SERVICE_TTL_S

from ..deps import Gateway, GatewayDep
from ..schemas import HealthBody, ServiceHealth

router = APIRouter(tags=["health"])


def service_heartbeats(gw: Gateway) -> list[ServiceHeartbeat]:
    beats = []
    for raw in list(gw.services.values.values()):
        with contextlib.suppress(ValueError):
            beats.append(ServiceHeartbeat.model_validate_json(raw))
    return beats


@router.get(
    "/api/health",
    response_model=HealthBody,
    responses={503: {"model": HealthBody, "description": "Something the gateway needs is down"}},
    summary="Health of NATS, the KV store and every service",
)
async def health(gw: GatewayDep) -> JSONResponse:
    connection = gw.runtime.broker.connection if gw.runtime.js is not None else None
    nats_ok = bool(connection is not None and connection.is_connected)
    kv_ok = False
    beats: list[ServiceHeartbeat] = []
    if nats_ok and gw.runtime.tasks_kv is not None:
        try:
            await asyncio.wait_for(gw.runtime.tasks_kv.status(), timeout=2)
            kv_ok = True
        except Exception:
            kv_ok = False
        beats = service_heartbeats(gw)
    fresh_after = utcnow() - timedelta(seconds=SERVICE_TTL_S)
    services: dict[str, ServiceHealth] = {}
    for name in sorted({*REQUIRED_SERVICES, *(b.service for b in beats)}):
        live = [b for b in beats if b.service == name and b.last_seen >= fresh_after]
        services[name] = ServiceHealth(
            ok=bool(live),
            instances=[
                {"instance": b.instance, "pid": b.pid, "host": b.host, "last_seen": b.last_seen.isoformat(), **b.detail}
                for b in live
            ],
        )
    ok = nats_ok and kv_ok and all(services[name].ok for name in REQUIRED_SERVICES)
    body = HealthBody(status="ok" if ok else "degraded", nats=nats_ok, kv=kv_ok, services=services)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
