import uvicorn

from .main import create_app
from .routes.stream import WS_MAX_MESSAGE_BYTES
from .settings import GatewaySettings

if __name__ == "__main__":
    settings = GatewaySettings()
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        # Live streams never end by themselves: without a limit a stop would wait for every
        # browser tab to close. Clients resume where they were from another replica or restart.
        timeout_graceful_shutdown=3,
        # Stream clients send nothing: a larger frame is not read (closed with 1009).
        ws_max_size=WS_MAX_MESSAGE_BYTES,
    )
