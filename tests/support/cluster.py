"""The stack on three hosts (issue 18): a three-node JetStream cluster configured as the `prod`
overlay configures it (deploy/k8s/overlays/prod/nats.conf, streams and buckets at three
replicas), and the services spread over the nodes' hosts, each process under `ip netns exec`
with the NATS URL of its own user listing all three nodes. The test drives it from a fourth
host, as a user would, through the gateway's REST API.

Hosts (tests/support/netns.py), on 10.77.0.0/24 inside the namespaces only:

    h1 10.77.0.1  nats-0, gateway, planner
    h2 10.77.0.2  nats-1, executor (scheduler), synthesizer
    h3 10.77.0.3  nats-2, container-manager and its agents, the LLM simulator
    cl 10.77.0.100  the test (its client)

What `make up` does is reused, not redone: the devstack's supervisor runs the processes, its
credentials module makes the users' passwords, aether_contracts.permissions their rights.
What differs from `make up` is only where each process runs and that NATS is three nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nats
import yaml
from nats.js.api import StreamInfo

from aether_contracts import topology
from aether_contracts.permissions import ADMIN, TOPOLOGY, USERS, nats_authorization
from aether_core.templates import load_registry
from aether_devstack import credentials
from aether_devstack.__main__ import nats_binary, with_credentials
from aether_devstack.supervisor import ChildSpec, Supervisor

from .k8s import localised
from .netns import Network

ROOT = Path(__file__).resolve().parents[2]
PROD_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "prod"
NODES = {"nats-0": "h1", "nats-1": "h2", "nats-2": "h3"}
OCTETS = {"h1": 1, "h2": 2, "h3": 3, "cl": 100}
PLACEMENT = {
    "gateway": "h1",
    "planner": "h1",
    "executor": "h2",
    "synthesizer": "h2",
    "container-manager": "h3",
    "simulator": "h3",
}
HTTP_PORT = 8000
SIM_PORT = 8100
STOP_ORDER = ("gateway", "planner", "container-manager", "executor", "synthesizer", "simulator")


class LoggedSupervisor(Supervisor):
    """The devstack's supervisor, its children's output in a file (the test prints its tail)."""

    def __init__(self, state_file: Path, log_path: Path) -> None:
        super().__init__(state_file)
        self.out = log_path.open("a", buffering=1)

    def log(self, name: str, line: str, color: int = 37) -> None:
        self.out.write(f"{time.strftime('%H:%M:%S')} {name:<18} | {line}\n")


def prod_nats_config(node: str, store: Path, routes: dict[str, str]) -> str:
    """The prod overlay's nats.conf (its ConfigMap is made from this file) with this machine's
    paths and the nodes' addresses in place of the pods' (`server_name` is $POD_NAME)."""
    conf = localised(
        PROD_OVERLAY.joinpath("nats.conf").read_text(),
        {
            "store_dir: /data": f'store_dir: "{store}"',
            "pid_file: /var/run/nats/nats.pid": f'pid_file: "{store.parent / "nats.pid"}"',
            **{f"nats://{name}.nats-headless:6222": f"nats://{address}:6222" for name, address in routes.items()},
        },
    )
    assert "sync_interval: always" in conf and 'include "auth/users.conf"' in conf, "prod's nats.conf changed"
    return conf


def prod_replicas() -> int:
    """AETHER_NATS_REPLICAS as the prod overlay sets it for every service."""
    kustomization = yaml.safe_load(PROD_OVERLAY.joinpath("kustomization.yaml").read_text())
    common = next(g for g in kustomization["configMapGenerator"] if g["name"] == "aether-common")
    return int(dict(item.split("=", 1) for item in common["literals"])["AETHER_NATS_REPLICAS"])


class PartitionedStack:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.data_dir = Path(tempfile.mkdtemp(prefix="aether-partition-"))
        self.log_path = self.data_dir / "stack.log"
        self.network = Network()
        self.supervisor: LoggedSupervisor | None = None
        self.passwords: dict[str, str] = {}
        self.node_specs: dict[str, ChildSpec] = {}
        self._inside: contextlib.ExitStack | None = None

    # -- addresses -------------------------------------------------------------------------------
    def address(self, host: str) -> str:
        return self.network.hosts[host].address

    @property
    def url(self) -> str:
        return f"http://{self.address(PLACEMENT['gateway'])}:{HTTP_PORT}"

    @property
    def sim_url(self) -> str:
        return f"http://{self.address(PLACEMENT['simulator'])}:{SIM_PORT}"

    def servers(self) -> str:
        return ",".join(f"nats://{self.address(h)}:4222" for h in NODES.values())

    def nats_url(self, user: str) -> str:
        return with_credentials(self.servers(), user, self.passwords[user])

    def node_url(self, node: str, user: str = ADMIN) -> str:
        return credentials.nats_url(user, self.passwords[user], f"{self.address(NODES[node])}:4222")

    def monitor_url(self, node: str) -> str:
        return f"http://{self.address(NODES[node])}:8222"

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, timeout: float = 180) -> PartitionedStack:
        """Make the hosts, then run the cluster and the services as `make up` would. This
        thread stays on the client host until `stop` (its sockets are made there)."""
        self.network.create()
        for host, octet in OCTETS.items():
            self.network.add_host(host, octet)
        self._enter_client()
        self.supervisor = LoggedSupervisor(self.data_dir / "devstack.json", self.log_path)
        deadline = time.monotonic() + timeout

        agent_types = load_registry(None).agent_types
        self.passwords = credentials.nats_passwords(self.data_dir, (*USERS, ADMIN))
        users = nats_authorization(self.passwords, agent_types)
        routes = {node: self.address(host) for node, host in NODES.items()}
        for node, host in NODES.items():
            home = self.data_dir / node
            (home / "auth").mkdir(parents=True)
            credentials.write_private(home / "auth" / "users.conf", users)
            config = home / "nats.conf"
            credentials.write_private(config, prod_nats_config(node, home / "data", routes))
            # The supervisor does not restart a node: the test kills and restarts them itself.
            self.node_specs[node] = ChildSpec(
                node,
                self.network.argv(host, [nats_binary(), "-c", str(config)]),
                {"POD_NAME": node},
                restart=False,
                stop_timeout=20,
            )
            await self.supervisor.start(self.node_specs[node])
        await self.wait_cluster(deadline - time.monotonic())

        declared = await self.supervisor.run_once(
            ChildSpec(
                "topology",
                self.network.argv(PLACEMENT["gateway"], [sys.executable, "-m", "aether_gateway", "topology"]),
                {"AETHER_NATS_URL": self.nats_url(TOPOLOGY), "AETHER_INSTANCE_ID": "partition",
                 "AETHER_NATS_REPLICAS": str(prod_replicas())},
            )
        )
        if declared != 0:
            raise RuntimeError(f"declaring the topology failed (exit {declared}):\n{self.log_tail()}")

        await self.supervisor.start(
            ChildSpec(
                "simulator",
                self.network.argv(PLACEMENT["simulator"], [
                    sys.executable, "-m", "aether_simulator", "--host", self.address(PLACEMENT["simulator"]),
                    "--port", str(SIM_PORT),
                ]),
                {k: v for k, v in self.env.items() if k.startswith("AETHER_SIM_")},
            )
        )
        for name, env in self.service_environments().items():
            module = f"aether_{name.replace('-', '_')}"
            await self.supervisor.start(
                ChildSpec(
                    name,
                    self.network.argv(PLACEMENT[name], [sys.executable, "-m", module]),
                    {**self.env, "AETHER_INSTANCE_ID": name, "AETHER_NATS_REPLICAS": str(prod_replicas()), **env},
                    stop_timeout=60.0 if name == "container-manager" else 15.0,
                )
            )
        if not await self.wait_healthy(deadline - time.monotonic()):
            raise RuntimeError(f"the stack did not become healthy:\n{self.log_tail()}")
        return self

    def service_environments(self) -> dict[str, dict[str, str]]:
        """What each service gets, as `make up` gives it (aether_devstack.__main__): its own NATS
        user, the LLM only where it is called, the API key only to the gateway."""
        llm = {"OPENAI_BASE_URL": f"{self.sim_url}/v1", "OPENAI_API_KEY": "simulator"}
        key = credentials.api_key(self.data_dir)
        return {
            "gateway": {
                "AETHER_NATS_URL": self.nats_url("gateway"),
                "AETHER_API_KEYS": f"dev:{key}:admin",
                "AETHER_HTTP_HOST": self.address(PLACEMENT["gateway"]),
                "AETHER_HTTP_PORT": str(HTTP_PORT),
            },
            "planner": {"AETHER_NATS_URL": self.nats_url("planner"), **llm},
            "executor": {"AETHER_NATS_URL": self.nats_url("executor"), "AETHER_EXECUTOR_ROLE": "scheduler"},
            "synthesizer": {"AETHER_NATS_URL": self.nats_url("synthesizer"), **llm},
            "container-manager": {
                "AETHER_NATS_URL": self.nats_url("container-manager"),
                "AETHER_AGENT_NATS_URL": self.nats_url("agent"),
                "AETHER_AGENT_BACKEND": "process",
                "AETHER_AGENT_LOG_DIR": str(self.data_dir / "agents"),
                # Agents are found again by this label after a restart: unique to this run.
                "AETHER_POOL_SCOPE": self.network.run,
                **llm,
            },
        }

    def _enter_client(self) -> None:
        """Put this thread on the client host. The event loop's worker threads are replaced
        on the way in and out, so none made here outlives the test on the wrong network."""
        loop = asyncio.get_running_loop()
        stack = contextlib.ExitStack()
        stack.enter_context(self.network.inside("cl"))
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="partition-client"))
        stack.callback(lambda: loop.set_default_executor(ThreadPoolExecutor()))
        self._inside = stack

    async def stop(self) -> None:
        """Heal every link, stop every process in order, remove the hosts. Safe to call twice
        and after a failed start."""
        try:
            for host in list(self.network.hosts):
                with contextlib.suppress(Exception):
                    self.network.plug(host)
                    self.network.unslow(host)
            if self.supervisor is not None:
                await asyncio.wait_for(self.supervisor.stop_all(STOP_ORDER), 180)
        finally:
            if self._inside is not None:
                self._inside.close()
                self._inside = None
            self.network.destroy()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- NATS --------------------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        assert self.supervisor is not None
        child = self.supervisor.children[name]
        return child.process.pid if child.process and child.process.returncode is None else None

    async def kill_node(self, node: str) -> None:
        assert self.supervisor is not None
        child = self.supervisor.children[node]
        assert child.process is not None
        child.process.kill()
        await child.process.wait()

    async def restart_node(self, node: str) -> None:
        assert self.supervisor is not None
        await self.supervisor.start(self.node_specs[node])

    async def wait_cluster(self, timeout: float) -> None:
        """Every node answers /healthz (JetStream up, the meta leader known, its streams current)."""
        deadline = time.monotonic() + timeout
        pending = set(NODES)
        async with httpx.AsyncClient(timeout=2) as client:
            while pending and time.monotonic() < deadline:
                for node in list(pending):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{self.monitor_url(node)}/healthz")).status_code == 200:
                            pending.discard(node)
                await asyncio.sleep(0.3)
        if pending:
            raise RuntimeError(f"NATS nodes not healthy: {sorted(pending)}\n{self.log_tail()}")

    async def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=3) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/api/health")).status_code == 200:
                        return True
                await asyncio.sleep(0.5)
        return False

    async def stream_info(self, stream: str = topology.STREAM, *, via: str | None = None) -> StreamInfo:
        """The stream's state as one node (or any) reports it, as `admin`."""
        servers = [self.node_url(via)] if via else self.nats_url(ADMIN).split(",")
        connection = await nats.connect(servers, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)
        try:
            return await connection.jetstream(timeout=5).stream_info(stream)
        finally:
            await connection.close()

    async def leader(self, stream: str = topology.STREAM, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = await self.stream_info(stream)
                if info.cluster and info.cluster.leader:
                    return info.cluster.leader
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"{stream} has no leader")
            await asyncio.sleep(0.5)

    async def meta_leader(self) -> str | None:
        async with httpx.AsyncClient(timeout=3) as client:
            for node in NODES:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    body = (await client.get(f"{self.monitor_url(node)}/jsz")).json()
                    return body["meta_cluster"]["leader"]
        return None

    # -- REST --------------------------------------------------------------------------------
    @property
    def api_key(self) -> str:
        return credentials.api_key(self.data_dir)

    def client(self, *, timeout: float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {self.api_key}"})

    def children(self) -> dict[str, dict]:
        return {c["name"]: c for c in json.loads((self.data_dir / "devstack.json").read_text())["children"]}
