"""`python -m aether_container_manager`: run the pool. `... sweep`: stop and remove every agent of
this pool's scope, whoever started it (what `make up` does after stopping, so an agent started
by a container-manager that died mid-start cannot outlive the stack)."""

import asyncio
import sys

from .backends import sweep
from .main import create_app, make_backend
from .settings import ContainerManagerSettings

if __name__ == "__main__":
    if sys.argv[1:] == ["sweep"]:
        settings = ContainerManagerSettings()
        removed = asyncio.run(sweep(make_backend(settings), settings.agent_stop_timeout_s))
        print(f"removed {removed} agent(s) of {settings.scope}")
    else:
        asyncio.run(create_app().run())
