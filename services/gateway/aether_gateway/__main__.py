"""`python -m aether_gateway`: serve the REST API. `... topology`: declare the stream, the KV
buckets and every consumer, then exit (as the NATS user `topology`: `make up` runs it before the
services, Kubernetes in the gateway pods' init container; see aether_core.service.declare_topology)."""

import asyncio
import logging
import sys
from types import FrameType

import uvicorn

from aether_core.config import ServiceSettings
from aether_core.service import configure_logging, declare_topology
from aether_core.stopping import StopGuard
from aether_core.telemetry import FreshContext

from .connections import protocols
from .main import create_app
from .routes.stream import WS_MAX_MESSAGE_BYTES
from .settings import GatewaySettings


class Server(uvicorn.Server):
    """uvicorn's server with a bounded stop (aether_core.stopping): its signal handler arms it."""

    def __init__(self, config: uvicorn.Config, stop_timeout_s: float) -> None:
        super().__init__(config)
        self.stop_guard = StopGuard(stop_timeout_s, "gateway")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop_guard.arm()
        super().handle_exit(sig, frame)


def topology() -> None:
    settings = ServiceSettings()
    configure_logging(settings.log_level)
    agent_types = asyncio.run(declare_topology(settings))
    logging.getLogger("aether.topology").info(
        "topology declared on %s (%d agent types)", ", ".join(settings.nats_addresses), len(agent_types)
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["topology"]:
        topology()
    else:
        settings = GatewaySettings()
        config = uvicorn.Config(
            FreshContext(create_app(settings)),
            host=settings.http_host,
            port=settings.http_port,
            log_level=settings.log_level.lower(),
            access_log=settings.access_log,
            # Live streams never end by themselves: without a limit a stop would wait for every
            # browser tab to close. Clients resume where they were from another replica or restart.
            timeout_graceful_shutdown=3,
            # uvicorn's 5 s equals httpx's keep-alive expiry: a request sent on a connection at the
            # moment the server closes it failed with "Server disconnected without sending a response".
            # uvicorn types it int, but only hands it to loop.call_later, which takes seconds as a float.
            timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
            # Stream clients send nothing: a larger message (in one frame or many) is not read
            # (closed with 1009).
            ws_max_size=WS_MAX_MESSAGE_BYTES,
            # A client that stops reading holds little and is closed after a while.
            **protocols(settings.slow_client_timeout_s),
        )
        server = Server(config, settings.stop_timeout_s)
        try:
            server.run()
        finally:
            server.stop_guard.disarm()
