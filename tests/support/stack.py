"""The stack as `make up` starts it (aether_devstack.harness), with what the tests add: the
Mission Board for the browser tests, and REST calls that assert as they go."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from aether_devstack import harness
from aether_devstack.harness import TERMINAL

UI_DIST = Path(__file__).resolve().parents[2] / "ui" / "dist"


class Stack(harness.Stack):
    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        scale: str | None = None,
        ui: bool = False,
        python: str | None = None,
        root: Path | None = None,
    ) -> None:
        """`ui`: serve the Mission Board as `make ui` built it."""
        super().__init__(env=env, scale=scale, ui_dir=UI_DIST if ui else None, python=python, root=root)

    async def submit(self, client: httpx.AsyncClient, description: str, **extra: Any) -> dict:
        response = await client.post("/api/orchestrate/task", json={"description": description, **extra})
        assert response.status_code == 202, response.text
        return response.json()

    async def wait_task(
        self, client: httpx.AsyncClient, task_id: str, timeout: float = 60, until=TERMINAL
    ) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            response = await client.get(f"/api/orchestrate/task/{task_id}")
            assert response.status_code == 200, response.text
            body = response.json()
            if body["status"] in until:
                return body
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"task {task_id} still {body.get('status')} after {timeout}s; logs:\n"
            + "\n".join(body.get("logs", [])[-30:])
            + f"\n--- stack log ---\n{self.log_tail(3000)}"
        )

    async def sim_requests(self, client: httpx.AsyncClient, **query: str) -> list[dict]:
        response = await client.get(f"{self.sim_url}/_sim/requests", params=query)
        response.raise_for_status()
        return response.json()["requests"]
