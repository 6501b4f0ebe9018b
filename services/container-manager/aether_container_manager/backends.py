"""Where agents run. Two real backends behind one interface: local processes and Docker.

An agent is the executor in its worker role (`python -m aether_executor worker`) bound to one
agent type. Both backends label what they start (environment variables for processes, container
labels for Docker) with the pool's scope, so a restarted container-manager finds, adopts or
removes what an earlier one left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("aether.container_manager.backends")

LABEL_MANAGED = "aether.managed"
LABEL_TYPE = "aether.agent-type"
LABEL_ID = "aether.agent-id"
LABEL_SCOPE = "aether.scope"


@dataclass
class Found:
    """An agent discovered at start-up, left by an earlier container-manager."""

    agent_id: str
    agent_type: str
    runtime_id: str
    running: bool


class BackendError(RuntimeError):
    pass


class AgentBackend(Protocol):
    name: str

    async def start(self, agent_id: str, agent_type: str, env: dict[str, str]) -> str: ...

    async def exit_code(self, runtime_id: str) -> int | None:
        """None while running; the exit code (or -1 if unknown) once it is gone."""
        ...

    async def stop(self, runtime_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns once it is gone."""
        ...

    async def remove(self, runtime_id: str) -> None: ...

    async def discover(self) -> list[Found]: ...

    async def close(self) -> None: ...


def agent_marks(scope: str, agent_id: str, agent_type: str) -> dict[str, str]:
    return {
        "AETHER_MANAGED": "1",
        "AETHER_POOL_SCOPE": scope,
        "AETHER_AGENT_ID": agent_id,
        "AETHER_INSTANCE_ID": agent_id,
        "AETHER_AGENT_TYPES": agent_type,
        "AETHER_EXECUTOR_ROLE": "worker",
    }


class ProcessBackend:
    """Agents as local processes (each in its own session, logging to its own file)."""

    name = "process"

    def __init__(self, scope: str, log_dir: Path, base_env: dict[str, str]) -> None:
        self.scope = scope
        self.log_dir = log_dir
        self.base_env = base_env
        self.children: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, agent_id: str, agent_type: str, env: dict[str, str]) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        environment = {
            **self.base_env,
            **env,
            **agent_marks(self.scope, agent_id, agent_type),
            "AETHER_AGENT_RUNTIME": "process",
            "PYTHONUNBUFFERED": "1",
        }
        with (self.log_dir / f"{agent_id}.log").open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "aether_executor",
                "worker",
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for the stack reaches the manager, which stops
                # agents in order; and an agent outlives a crashed manager, to be adopted.
                start_new_session=True,
            )
        self.children[str(process.pid)] = process
        return str(process.pid)

    async def exit_code(self, runtime_id: str) -> int | None:
        child = self.children.get(runtime_id)
        if child is not None:
            return child.returncode  # set by asyncio's child watcher when it exits
        return None if _pid_alive(int(runtime_id)) else -1

    async def stop(self, runtime_id: str, timeout: float) -> None:
        pid = int(runtime_id)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.exit_code(runtime_id) is not None:
                return
            await asyncio.sleep(0.1)
        log.warning("agent process %s did not stop in %.0fs; killing it", runtime_id, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if await self.exit_code(runtime_id) is not None:
                return
            await asyncio.sleep(0.1)

    async def remove(self, runtime_id: str) -> None:
        self.children.pop(runtime_id, None)

    async def discover(self) -> list[Found]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                raw = (entry / "environ").read_bytes()
            except OSError:
                continue
            env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
            if env.get("AETHER_MANAGED") != "1" or env.get("AETHER_POOL_SCOPE") != self.scope:
                continue
            found.append(
                Found(
                    agent_id=env.get("AETHER_AGENT_ID", f"unknown-{entry.name}"),
                    agent_type=env.get("AETHER_AGENT_TYPES", "unknown"),
                    runtime_id=entry.name,
                    running=_pid_alive(int(entry.name)),
                )
            )
        return found

    async def close(self) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class DockerBackend:
    """Agents as hardened Docker containers, through the Docker Engine API."""

    name = "docker"

    def __init__(
        self,
        scope: str,
        *,
        image: str,
        network: str,
        memory: str,
        cpus: float,
        pids: int,
        user: str,
    ) -> None:
        import docker

        self.scope = scope
        self.image = image
        self.network = network
        self.memory = memory
        self.cpus = cpus
        self.pids = pids
        self.user = user
        try:
            self.client = docker.from_env(timeout=60)
            self.client.ping()
        except Exception as exc:
            raise BackendError(f"no Docker engine answers: {exc}") from exc

    def check_image(self) -> None:
        import docker.errors

        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound as exc:
            raise BackendError(
                f"the agent image {self.image} is missing: build it with `make images` "
                "(`make up` builds it when AETHER_AGENT_BACKEND=docker)"
            ) from exc

    def _run(self, agent_id: str, agent_type: str, env: dict[str, str]) -> str:
        name = f"aether-agent-{agent_id}"
        network = {"network_mode": "host"} if self.network == "host" else {"network": self.network}
        probe = {}
        if self.network == "host":
            # Agents share the host's ports: each needs a probe port of its own.
            probe["AETHER_PROBE_PORT"] = str(_free_port())
        container = self.client.containers.run(
            self.image,
            detach=True,
            name=name,
            labels={
                LABEL_MANAGED: "true",
                LABEL_SCOPE: self.scope,
                LABEL_ID: agent_id,
                LABEL_TYPE: agent_type,
            },
            environment={
                **env,
                **agent_marks(self.scope, agent_id, agent_type),
                "AETHER_AGENT_RUNTIME": "docker",
                "AETHER_AGENT_RUNTIME_ID": name,
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                **probe,
            },
            user=self.user,
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mem_limit=self.memory,
            nano_cpus=int(self.cpus * 1e9),
            pids_limit=self.pids,
            **network,
        )
        return container.name

    async def start(self, agent_id: str, agent_type: str, env: dict[str, str]) -> str:
        return await asyncio.to_thread(self._run, agent_id, agent_type, env)

    def _exit_code(self, runtime_id: str) -> int | None:
        import docker.errors

        try:
            container = self.client.containers.get(runtime_id)
        except docker.errors.NotFound:
            return -1
        if container.status in ("created", "running", "restarting", "paused"):
            return None
        return int(container.attrs.get("State", {}).get("ExitCode", -1))

    async def exit_code(self, runtime_id: str) -> int | None:
        return await asyncio.to_thread(self._exit_code, runtime_id)

    def _stop(self, runtime_id: str, timeout: float) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(runtime_id).stop(timeout=int(max(1, timeout)))

    async def stop(self, runtime_id: str, timeout: float) -> None:
        await asyncio.to_thread(self._stop, runtime_id, timeout)

    def _remove(self, runtime_id: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.client.containers.get(runtime_id).remove(force=True)

    async def remove(self, runtime_id: str) -> None:
        await asyncio.to_thread(self._remove, runtime_id)

    def _discover(self) -> list[Found]:
        containers = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_SCOPE}={self.scope}"]}
        )
        return [
            Found(
                agent_id=c.labels.get(LABEL_ID, c.name),
                agent_type=c.labels.get(LABEL_TYPE, "unknown"),
                runtime_id=c.name,
                running=c.status in ("created", "running", "restarting"),
            )
            for c in containers
        ]

    async def discover(self) -> list[Found]:
        return await asyncio.to_thread(self._discover)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


async def sweep(backend: AgentBackend, timeout: float) -> int:
    """Stop and remove every agent of the backend's scope; returns how many there were."""
    found = await backend.discover()

    async def remove(agent: Found) -> None:
        if agent.running:
            await backend.stop(agent.runtime_id, timeout)
        await backend.remove(agent.runtime_id)

    await asyncio.gather(*(remove(a) for a in found))
    await backend.close()
    return len(found)
