"""The nats-server configuration the manifests deploy, run for real (only addresses and paths
are made local). Prod's three nodes form one JetStream cluster that fsyncs every write, the
topology with AETHER_NATS_REPLICAS=3 is replicated on all of them and keeps working with a node
down, and consumer leaders are named by pod: KEDA's scaler relies on that to ask a consumer's
leader for its lag at <pod>.<headless service>."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from aether_contracts import subjects, topology
from aether_core import declare
from aether_core.templates import load_registry
from aether_devstack.nats_secrets import generate
from tests.support.k8s import localised, nats_conf, render
from tests.support.nats import nats_binary, stop_process
from tests.support.ports import free_port


class Node:
    """One nats-server started from a deployed configuration, made local."""

    def __init__(self, name: str, conf: str, routes: dict[str, int] | None = None) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"aether-{name}-"))
        self.client, self.monitor = free_port(), free_port()
        self.cluster = routes[name] if routes else None
        replacements = {
            "listen: 0.0.0.0:4222": f"listen: 127.0.0.1:{self.client}",
            "http: 0.0.0.0:8222": f"http: 127.0.0.1:{self.monitor}",
            "store_dir: /data": f'store_dir: "{self.dir / "js"}"',
            "pid_file: /var/run/nats/nats.pid": f'pid_file: "{self.dir / "nats.pid"}"',
        }
        if routes:
            replacements["listen: 0.0.0.0:6222"] = f"listen: 127.0.0.1:{self.cluster}"
            for peer, port in routes.items():
                replacements[f"nats://{peer}.nats-headless:6222"] = f"nats://127.0.0.1:{port}"
        (self.dir / "nats.conf").write_text(localised(conf, replacements))
        # What the Secret aether-nats-users holds, made by the same generator as `make k8s-secrets`.
        users, _, self.passwords = generate("aether", "unused")
        (self.dir / "auth").mkdir()
        (self.dir / "auth" / "users.conf").write_text(users)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """As the gateway: the deployed configuration admits no anonymous client."""
        return self.url_as("gateway")

    def url_as(self, user: str) -> str:
        return f"nats://{user}:{self.passwords[user]}@127.0.0.1:{self.client}"


    def start(self) -> Node:
        self.process = subprocess.Popen(
            [nats_binary(), "-c", str(self.dir / "nats.conf")],
            env={**os.environ, "POD_NAME": self.name},
            stdout=(self.dir / "log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}{path}", timeout=2) as r:
            return json.loads(r.read())

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def log(self) -> str:
        return (self.dir / "log").read_text(errors="replace")[-3000:]


async def connect_as(nodes: list[Node], user: str) -> nats.NATS:
    """The cluster as one NATS user sees it (with that user's inbox, the only one it may read)."""
    return await nats.connect(
        [n.url_as(user) for n in nodes],
        inbox_prefix=subjects.inbox_prefix(user),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )


def wait_healthy(nodes: list[Node], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            assert node.process is not None and node.process.poll() is None, node.log()
        if all(node.healthy() for node in nodes):
            return
        time.sleep(0.2)
    raise AssertionError("nodes not healthy:\n" + "\n".join(n.log() for n in nodes))


def test_the_config_parses_as_nats_server_reads_it():
    for overlay in ("dev", "prod"):
        node = Node("nats-0", nats_conf(render(overlay)), {"nats-0": 1, "nats-1": 2, "nats-2": 3} if overlay == "prod" else None)
        result = subprocess.run(
            [nats_binary(), "-t", "-c", str(node.dir / "nats.conf")],
            env={**os.environ, "POD_NAME": "nats-0"}, capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


async def test_dev_runs_one_node_that_syncs_every_write_and_admits_only_its_users():
    node = Node("nats-0", nats_conf(render("dev"))).start()
    try:
        wait_healthy([node])
        varz = node.get("/varz")
        assert varz["server_name"] == "nats-0"
        assert varz["jetstream"]["config"]["sync_always"] is True
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(f"nats://127.0.0.1:{node.client}", max_reconnect_attempts=0, allow_reconnect=False)
        client = await nats.connect(node.url, inbox_prefix=subjects.inbox_prefix("gateway"))
        await client.close()
    finally:
        node.stop()


@pytest.fixture
def prod_cluster():
    conf = nats_conf(render("prod"))
    routes = {f"nats-{i}": free_port() for i in range(3)}
    nodes = [Node(name, conf, routes).start() for name in routes]
    try:
        wait_healthy(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def test_prod_nodes_form_one_cluster_that_keeps_the_topology_with_a_node_down(prod_cluster):
    nodes = prod_cluster
    for node in nodes:
        varz = node.get("/varz")
        assert varz["server_name"] == node.name
        assert varz["jetstream"]["config"]["sync_always"] is True
        # No gossiped client URLs: KEDA then finds the nodes by name (<pod>.<headless host>).
        assert not varz.get("connect_urls")

    agent_types = load_registry(None).agent_types
    # Each as the deployment connects: the init container declares, the services use.
    declarer, planner, client = [await connect_as(nodes, user) for user in ("topology", "planner", "gateway")]
    try:
        await _eventually(lambda: declare.ensure_topology(declarer.jetstream(), agent_types, replicas=3))
        info = await declarer.jetstream().stream_info(topology.STREAM)
        assert info.config.num_replicas == 3
        assert len(info.cluster.replicas) == 2
        for bucket in topology.BUCKETS:
            assert (await declarer.jetstream().stream_info(f"KV_{bucket.name}")).config.num_replicas == 3

        # What KEDA's scaler reads: the cluster size, then the consumer on its leader node.
        jsz = nodes[0].get("/jsz?acc=$G&consumers=true&config=true")
        assert jsz["meta_cluster"]["cluster_size"] == 3
        consumer = await planner.jetstream().consumer_info(topology.STREAM, topology.PLANNER.durable)
        leader = next(n for n in nodes if n.name == consumer.cluster.leader)
        on_leader = leader.get("/jsz?acc=$G&consumers=true&config=true")
        streams = {s["name"]: s for a in on_leader["account_details"] for s in a["stream_detail"]}
        assert topology.PLANNER.durable in {c["name"] for c in streams[topology.STREAM]["consumer_detail"]}

        js = client.jetstream()
        kv = await js.key_value(topology.TASKS_BUCKET)
        await kv.put("before", b"1")
        leader.stop()  # a node drained or lost: two of three keep the quorum
        await _eventually(lambda: kv.put("after", b"2"))
        assert (await kv.get("before")).value == b"1"  # a replicated bucket: a leader read
        await _eventually(lambda: js.publish(subjects.TASK_CREATED, b"{}"))
    finally:
        for connection in (declarer, planner, client):
            await connection.close()


async def _eventually(action, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await action()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
