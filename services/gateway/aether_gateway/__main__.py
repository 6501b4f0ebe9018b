import uvicorn

from .main import create_app
from .settings import GatewaySettings

if __name__ == "__main__":
    settings = GatewaySettings()
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
