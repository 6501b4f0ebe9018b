"""The stack as `make up` starts it (aether_devstack.harness), with what the tests add: the
Mission Board for the browser tests, and a submit that asserts its 202."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from aether_devstack import harness

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
        """`ui`: serve the Mission Board as `make ui` built it. The gateway's access log is off
        unless a test asks for it: the tests poll, and a failure's log tail would show only that."""
        env = {"AETHER_ACCESS_LOG": "off", **(env or {})}
        super().__init__(env=env, scale=scale, ui_dir=UI_DIST if ui else None, python=python, root=root)

    async def submit(self, client: httpx.AsyncClient, description: str, **extra: Any) -> dict:
        response = await client.post("/api/orchestrate/task", json={"description": description, **extra})
        assert response.status_code == 202, response.text
        return response.json()
