"""Prometheus metrics: every service's /metrics, scraped before and after a task, moved as the
task went; the gateway's gauges read the shared state (consumers, agent pool, tasks)."""

from datetime import timedelta

import httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aether_contracts import topology
from aether_contracts.agents import AGENT_TTL_S, AgentRecord, AgentStatus, agent_key
from aether_contracts.state import utcnow
from aether_core import declare
from tests.support.plans import scripted, subtask
from tests.support.services import eventually

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def has(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= ls for (n, ls) in samples)


PROBED = ("planner", "executor", "synthesizer", "container-manager")


async def scrape_all(stack) -> dict[str, Samples]:
    urls = {"gateway": stack.url} | {s: stack.probe_url(s) for s in PROBED}
    return {service: await scrape(url) for service, url in urls.items()}


async def test_counters_move_with_a_task_in_every_service(stack):
    plan = scripted(
        "Metrics",
        [
            subtask("good", "python-backend"),
            # refused: it fails at once (and Jason replans it, so the task still completes)
            subtask("bad", "devops-expert", sim="fail=400"),
        ],
    )
    before = await scrape_all(stack)
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
    assert task["status"] == "completed"
    after = await scrape_all(stack)

    def moved(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    # messages handled, by FastStream's middleware, in each NATS service
    assert moved("planner", "faststream_received_processed_messages_total", handler="aether.task.created", status="acked") >= 1
    assert moved("executor", "faststream_received_processed_messages_total", handler="aether.subtask.finished", status="acked") >= 2
    assert moved("synthesizer", "faststream_received_processed_messages_total", handler="aether.synthesis.requested") >= 1
    assert moved("gateway", "faststream_published_messages_total", destination="aether.task.created", status="success") >= 1
    assert moved("gateway", "aether_tasks_submitted_total") >= 1

    # tasks and subtasks by outcome, where the outcome was written; durations by agent type
    assert moved("synthesizer", "aether_tasks_finished_total", outcome="completed") >= 1
    assert moved("synthesizer", "aether_task_duration_seconds_count", outcome="completed") >= 1
    assert moved("executor", "aether_subtasks_finished_total", agent_type="python-backend", outcome="completed") >= 1
    assert moved("executor", "aether_subtasks_finished_total", agent_type="devops-expert", outcome="failed") >= 1
    assert moved("executor", "aether_subtask_duration_seconds_count", agent_type="python-backend", outcome="completed") >= 1

    # LLM tokens: per subtask and per task where the outcome is written (the experts' calls are
    # made by agent processes, which have no probe port here), per call where it is made
    usage = {s["id"]: s["usage"] for s in task["subtasks"]}
    assert moved("executor", "aether_subtask_tokens_total", agent_type="python-backend", type="input") >= usage["good"]["prompt_tokens"] > 0
    assert moved("executor", "aether_subtask_tokens_total", agent_type="python-backend", type="output") >= usage["good"]["completion_tokens"] > 0
    assert moved("synthesizer", "aether_task_tokens_total", type="input") >= task["usage"]["prompt_tokens"] > 0
    assert moved("planner", "aether_llm_tokens_total", role="planner", type="input") > 0
    assert moved("planner", "aether_llm_requests_total", role="planner", outcome="ok") >= 1
    assert moved("synthesizer", "aether_llm_tokens_total", role="synthesizer", type="output") > 0
    assert moved("synthesizer", "aether_llm_request_duration_seconds_count", role="synthesizer") >= 1
    assert has(after["container-manager"], "process_resident_memory_bytes")

    # the gateway's gauges: a backlog sample for every durable consumer, tasks per status
    gateway = after["gateway"]
    consumers = [c.durable for c in topology.SERVICE_CONSUMERS]
    consumers += [topology.worker_consumer(t).durable for t in ("python-backend", "devops-expert", "testing-expert")]
    for durable in consumers:
        assert has(gateway, "aether_consumer_backlog", consumer=durable), durable
        assert has(gateway, "aether_consumer_ack_pending", consumer=durable), durable
    assert value(gateway, "aether_tasks", status="completed") >= 1
    assert has(gateway, "aether_tasks", status="pending")


async def test_the_backlog_gauge_counts_what_no_worker_has_taken(stack):
    """A message on a subject whose consumer no worker reads (as for a type scaled to zero)."""
    durable = "metrics-test-idle"
    connection = await nats.connect(stack.nats_url)
    try:
        js = connection.jetstream()
        await declare.ensure_consumer(
            js, topology.ConsumerSpec(durable, "aether.agent.metrics-test", ack_wait_s=30, max_deliver=1)
        )
        for n in range(3):
            await js.publish("aether.agent.metrics-test", f"{n}".encode())
        samples = await scrape(stack.url)
        assert value(samples, "aether_consumer_backlog", consumer=durable) == 3
        assert value(samples, "aether_consumer_ack_pending", consumer=durable) == 0
    finally:
        await connection.jetstream().delete_consumer(topology.STREAM, durable)
        await connection.close()


async def test_the_agents_gauge_counts_live_agents_per_type(stack):
    now = utcnow()
    records = [
        AgentRecord(id="m-a1", name="a1", role="expert", agent_type="metrics-type", backend="process", status=AgentStatus.IDLE),
        AgentRecord(id="m-a2", name="a2", role="expert", agent_type="metrics-type", backend="process", status=AgentStatus.BUSY),
        AgentRecord(id="m-a3", name="a3", role="expert", agent_type="metrics-type", backend="process", status=AgentStatus.BUSY),
        # its process is gone: the record outlived AGENT_TTL_S
        AgentRecord(
            id="m-dead", name="dead", role="expert", agent_type="metrics-type", backend="process",
            status=AgentStatus.BUSY, last_seen=now - timedelta(seconds=AGENT_TTL_S * 2),
        ),
    ]
    connection = await nats.connect(stack.nats_url)
    kv = await connection.jetstream().key_value(topology.AGENTS_BUCKET)
    try:
        for record in records:
            await kv.put(agent_key(record.id), record.model_dump_json().encode())

        async def counted():
            samples = await scrape(stack.url)
            return samples if value(samples, "aether_agents", agent_type="metrics-type") == 3 else None

        samples = await eventually(counted, timeout=20)
        assert value(samples, "aether_agents", agent_type="metrics-type", role="expert", status="busy") == 2
        assert value(samples, "aether_agents", agent_type="metrics-type", role="expert", status="idle") == 1
    finally:
        for record in records:
            await kv.delete(agent_key(record.id))
        await connection.close()
