"""The services' probe endpoint means something: ready only while NATS and the KV store answer."""

import asyncio

import httpx

from tests.support.nats import NatsServer, declared
from tests.support.ports import free_port
from tests.support.services import eventually, synthesizer_app


async def test_readyz_follows_nats_and_livez_stays_up(simulator):
    nats = declared(NatsServer().start())
    port = free_port()
    try:
        async with synthesizer_app(nats, simulator, probe_port=port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/livez")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/nope")).status_code == 404
            nats.stop()

            async def not_ready():
                return (await http.get("/readyz")).status_code == 503

            await eventually(not_ready, timeout=15)
            assert (await http.get("/livez")).status_code == 200
            nats.start()  # same port and store: the service reconnects by itself

            async def ready_again():
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready_again, timeout=30)
    finally:
        nats.stop()
        await asyncio.sleep(0)


async def test_gateway_readyz_follows_nats_while_api_health_asks_for_every_service():
    import uvicorn

    from aether_gateway.main import create_app
    from aether_gateway.settings import GatewaySettings

    nats = declared(NatsServer().start())
    port = free_port()
    settings = GatewaySettings(nats_url=nats.url, http_port=port, instance_id="gateway-probe-test", auth=False)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def status(path: str) -> int | None:
                try:
                    return (await http.get(path)).status_code
                except httpx.HTTPError:
                    return None

            await eventually(lambda: _is(status("/readyz"), 200), timeout=30)
            assert await status("/livez") == 200
            # No planner, executor or synthesizer runs: the system is not healthy, this pod is ready.
            assert await status("/api/health") == 503
            nats.stop()
            await eventually(lambda: _is(status("/readyz"), 503), timeout=15)
            assert await status("/livez") == 200
            nats.start()
            await eventually(lambda: _is(status("/readyz"), 200), timeout=30)
    finally:
        server.should_exit = True
        await serving
        nats.stop()


async def _is(pending, expected) -> bool:
    return (await pending) == expected
