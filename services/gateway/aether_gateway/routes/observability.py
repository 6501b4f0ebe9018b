from fastapi import APIRouter, Response

from ..deps import GatewayDep
from ..schemas import ClientConfig

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    summary="Prometheus metrics",
    description="This gateway's counters and gauges of the shared state: backlog per consumer, "
    "agents per type, tasks per status.",
)
async def prometheus_metrics(gw: GatewayDep) -> Response:
    body, content_type = await gw.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/api/config", response_model=ClientConfig, summary="Settings a client (the UI) needs")
async def client_config(gw: GatewayDep) -> ClientConfig:
    return ClientConfig(jaeger_url=gw.settings.jaeger_url)
