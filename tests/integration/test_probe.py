"""The services' probe endpoint means something: ready only while NATS and the KV store answer."""

import asyncio

import httpx

from tests.support.nats import NatsServer
from tests.support.ports import free_port
from tests.support.services import eventually, synthesizer_app


async def test_readyz_follows_nats_and_livez_stays_up(simulator):
    nats = NatsServer().start()
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
