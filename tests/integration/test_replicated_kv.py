"""KV writes on a three-node cluster at three replicas, the prod overlay's settings (issue 18):
concurrent creates of one key lose with a conflict, never with `KeyNotFoundError`, which
nats-py raised for three of four losers and the gateway answered with a 500 (the first
submissions of a tenant, an idempotent resubmission racing its original)."""

import asyncio
import json
from collections import Counter

import nats
import pytest
from nats.js.errors import KeyWrongLastSequenceError

from aether_contracts import topology
from aether_contracts.state import TaskState
from aether_core import declare
from aether_core.kv import create_key
from aether_core.store import TaskExists, TaskStore
from aether_gateway.index import TaskIndex
from aether_gateway.quota import ActiveTasks, tenant_key
from tests.support.nats import NatsCluster

WRITERS = 20


@pytest.fixture(scope="module")
def cluster():
    running = NatsCluster().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
async def connections(cluster):
    """Five clients, spread over the nodes, on a topology declared at three replicas."""
    opened = [await nats.connect(cluster.servers) for _ in range(5)]
    for attempt in range(60):  # the cluster elects its meta leader first
        try:
            await declare.ensure_topology(opened[0].jetstream(timeout=10), replicas=3)
            break
        except Exception:
            if attempt == 59:
                raise
            await asyncio.sleep(0.5)
    yield opened
    for connection in opened:
        await connection.close()


async def buckets(connections, name: str):
    return [await c.jetstream(timeout=10).key_value(name) for c in connections]


ROUNDS = 10


async def race(create, lost: type[Exception], prefix: str) -> Counter:
    """`create(n, key)` by every writer at once, for ROUNDS keys: how each attempt ended."""

    async def attempt(n: int, key: str) -> str:
        try:
            await create(n, key)
            return "created"
        except lost:
            return "lost"

    outcomes = Counter()
    for round in range(ROUNDS):
        outcomes.update(await asyncio.gather(*(attempt(n, f"{prefix}-{round}") for n in range(WRITERS))))
    return outcomes


async def test_concurrent_creates_of_one_key_lose_with_a_conflict(connections):
    kvs = await buckets(connections, topology.LLM_SLOTS_BUCKET)
    outcomes = await race(lambda n, key: create_key(kvs[n % len(kvs)], key, b"{}"), KeyWrongLastSequenceError, "race")
    assert outcomes == {"created": ROUNDS, "lost": ROUNDS * (WRITERS - 1)}


async def test_a_task_created_twice_at_once_exists_once(connections):
    stores = [TaskStore(kv) for kv in await buckets(connections, topology.TASKS_BUCKET)]

    def create(n: int, task_id: str):
        return stores[n % len(stores)].create(TaskState(id=task_id, description="twice"))

    assert await race(create, TaskExists, "twice") == {"created": ROUNDS, "lost": ROUNDS * (WRITERS - 1)}


async def test_a_tenants_first_submissions_at_once_are_all_admitted(connections):
    tasks_kvs = await buckets(connections, topology.TASKS_BUCKET)
    quota_kvs = await buckets(connections, topology.QUOTAS_BUCKET)
    gateways = []
    for tasks_kv, quota_kv in zip(tasks_kvs, quota_kvs, strict=True):
        quota = ActiveTasks(TaskIndex(), TaskStore(tasks_kv), limit=1000)
        quota.bind(quota_kv)
        gateways.append(quota)

    for round in range(5):
        tenant = f"tenant-{round}"
        refused = await asyncio.gather(
            *(gateways[n % len(gateways)].admit(tenant, f"{tenant}-task-{n}") for n in range(WRITERS))
        )
        assert refused == [None] * WRITERS
        entry = await quota_kvs[0].get(tenant_key(tenant))
        assert len(json.loads(entry.value)) == WRITERS
