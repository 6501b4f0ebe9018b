import asyncio
import sys
from typing import Any

from .main import create_app
from .settings import ExecutorSettings

if __name__ == "__main__":
    # `python -m aether_executor [all|scheduler|worker]`; the argument overrides AETHER_EXECUTOR_ROLE.
    overrides: dict[str, Any] = {"executor_role": sys.argv[1]} if len(sys.argv) > 1 else {}
    asyncio.run(create_app(ExecutorSettings(**overrides)).run())
