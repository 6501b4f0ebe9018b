"""The whole stack, started exactly as `make up` starts it (`python -m aether_devstack up`), on
free ports and a private data directory, for the tests and the benchmark to drive through its
public API (REST; NATS only to observe). tests/support/stack.py adds the tests' assertions."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from aether_contracts.permissions import ADMIN

from . import credentials
from .ports import free_port

ROOT = Path(__file__).resolve().parents[3]
TERMINAL = {"completed", "failed", "cancelled"}


class Stack:
    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        scale: str | None = None,
        ui_dir: Path | None = None,
        python: str | None = None,
        root: Path | None = None,
        prefix: str = "aether-stack-",
    ) -> None:
        """`ui_dir`: a built Mission Board to serve (else none). `python` and `root` run another
        checkout (its virtualenv's python), e.g. to compare two versions side by side."""
        self.python = python or sys.executable
        self.root = root or ROOT
        self.data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.http_port = free_port()
        self.sim_port = free_port()
        self.nats_port = free_port()
        self.monitor_port = free_port()
        self.scale = scale
        self.env = {
            # Hermetic: a developer's own LLM key or OpenTelemetry setup must not leak in.
            **{
                k: v
                for k, v in os.environ.items()
                if k != "OPENAI_API_KEY" and not k.startswith("OTEL_")
            },
            "AETHER_DATA_DIR": str(self.data_dir),
            "AETHER_HTTP_PORT": str(self.http_port),
            "AETHER_SIM_PORT": str(self.sim_port),
            "AETHER_NATS_PORT": str(self.nats_port),
            "AETHER_NATS_MONITOR_PORT": str(self.monitor_port),
            "AETHER_SIM_LATENCY_MS": "0",
            "AETHER_SIM_LATENCY_DIST": "fixed",
            "AETHER_UI_DIR": str(ui_dir or self.data_dir / "no-ui"),
            # Every NATS service gets a free probe port (/metrics), as it would in Kubernetes.
            "AETHER_PROBE_PORT": "0",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "stack.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def nats_address(self) -> str:
        """The embedded NATS, without credentials: what anonymous clients would dial."""
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def nats_url(self) -> str:
        """The URL a test or the bench observes NATS with: the `admin` user the devstack made in
        its data dir (every right; aether_contracts.permissions), or an AETHER_NATS_URL given."""
        if self.env.get("AETHER_NATS_URL"):
            return self.env["AETHER_NATS_URL"]
        return credentials.nats_url(ADMIN, self.nats_passwords()[ADMIN], f"127.0.0.1:{self.nats_port}")

    def nats_passwords(self) -> dict[str, str]:
        """Each NATS user's password (once the stack has started)."""
        return json.loads((self.data_dir / credentials.NATS_USERS_FILE).read_text())

    def again(self) -> Stack:
        """A second `make up` in the same place: the same ports, settings and data directory."""
        other = copy.copy(self)
        other.env = dict(self.env)
        other.process = None
        return other

    def launch(self, *, own_group: bool = False) -> subprocess.Popen:
        """Start `python -m aether_devstack up` and return at once. `own_group`: in a process
        group of its own, which a test can signal as a terminal signals its foreground group."""
        argv = [self.python, "-m", "aether_devstack", "up"]
        if self.scale:
            argv += ["--scale", self.scale]
        self.process = subprocess.Popen(
            argv,
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.root,
            process_group=0 if own_group else None,
        )
        return self.process

    def start(self, timeout: float = 120, *, own_group: bool = False) -> Stack:
        self.launch(own_group=own_group)
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited early:\n{self.log_tail()}")
            crashing = [c["name"] for c in self._children_or_empty() if c["restarts"] >= 3]
            if crashing:
                self.stop()
                raise RuntimeError(f"{', '.join(crashing)} keep crashing:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the stack did not become healthy:\n{self.log_tail()}")

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(150)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    # -- processes ---------------------------------------------------------------------------
    def _children_or_empty(self) -> list[dict[str, Any]]:
        try:
            return list(self.children().values())
        except (OSError, ValueError, KeyError):
            return []

    def children(self) -> dict[str, dict[str, Any]]:
        state = json.loads((self.data_dir / "devstack.json").read_text())
        return {c["name"]: c for c in state["children"]}

    def pid(self, name: str) -> int:
        return self.children()[name]["pid"]

    def probe_url(self, name: str) -> str:
        """Where a NATS service serves /livez, /readyz and /metrics."""
        return f"http://127.0.0.1:{self.children()[name]['probe_port']}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    async def wait_restarted(self, name: str, old_pid: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.children()[name]["pid"]
            if pid != old_pid:
                return pid
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{name} was not restarted")

    def wait_healthy_again(self, name: str, old_pid: int, timeout: float = 60) -> None:
        """For synchronous tests: `name` runs under a new pid and the stack answers healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.children()[name]["pid"] != old_pid:
                try:
                    if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not come back healthy:\n{self.log_tail(3000)}")

    # -- REST ----------------------------------------------------------------------------------
    @property
    def api_key(self) -> str | None:
        """The development key `make up` generated (None with AETHER_AUTH=off)."""
        path = self.data_dir / credentials.API_KEY_FILE
        return path.read_text().strip() if path.exists() else None

    def auth_headers(self) -> dict[str, str]:
        key = self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self, *, key: str | None = None, anonymous: bool = False, timeout: float = 30) -> httpx.AsyncClient:
        headers = {} if anonymous else ({"Authorization": f"Bearer {key}"} if key else self.auth_headers())
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers)

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

    async def wait_idle_agent(self, client: httpx.AsyncClient, agent_type: str, timeout: float = 120) -> None:
        """Until an agent of this type is alive and idle: a test whose deadline must not be spent
        on an agent's start waits for one (its pool keeps one warm: `<type>:min=1`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            agents = (await client.get("/api/agents")).json()
            if any(a["agent_type"] == agent_type and a["alive"] and a["status"] == "idle" for a in agents):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no idle {agent_type} agent after {timeout}s\n--- stack log ---\n{self.log_tail(3000)}")

    async def sim_requests(self, client: httpx.AsyncClient, **query: str) -> list[dict]:
        response = await client.get(f"{self.sim_url}/_sim/requests", params=query)
        response.raise_for_status()
        return response.json()["requests"]
