"""The gateway's `/metrics`: its own counters plus gauges of the state every service shares.

Backlog per consumer, agents per type and tasks per status belong to no single worker (a type
with no worker running still has a backlog), so the gateway, which is always there, reports
them, read fresh at each scrape. Several gateway replicas report the same values: query them
with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aether_contracts import topology
from aether_contracts.agents import AGENT_TTL_S, ANY_TYPE, AgentRecord
from aether_contracts.state import TaskStatus, utcnow
from aether_core import metrics
from aether_core.mirror import KVMirror
from aether_core.service import Runtime
from aether_core.templates import Registry

from .index import TaskIndex
from .streams import StreamHub

log = logging.getLogger("aether.gateway.metrics")

TASKS_SUBMITTED = Counter("aether_tasks_submitted", "Tasks accepted by POST /api/orchestrate/task")
STREAMS_REFUSED = Counter(
    "aether_streams_refused", "Live streams refused by a limit (per_client or total)", ["limit"]
)
SLOW_CLIENTS_CLOSED = Counter(
    "aether_slow_clients_closed",
    "Connections closed because their client took nothing for AETHER_SLOW_CLIENT_TIMEOUT_S",
)


class SharedState(Collector):
    def __init__(self, runtime: Runtime, index: TaskIndex, agents: KVMirror, registry: Registry) -> None:
        self.runtime = runtime
        self.index = index
        self.agents = agents
        self.registry = registry
        self._consumers: list[tuple[str, int, int]] = []

    async def refresh(self) -> None:
        """Read every durable consumer of the work stream: one JetStream request."""
        if self.runtime.js is None:
            return
        try:
            infos = await asyncio.wait_for(self.runtime.js.consumers_info(topology.STREAM), 3)
        except Exception as exc:  # NATS away: the gauges go missing rather than lie
            log.warning("consumer info unavailable: %r", exc)
            self._consumers = []
            return
        self._consumers = sorted(
            (info.name, info.num_pending or 0, info.num_ack_pending or 0) for info in infos
        )

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "aether_consumer_backlog",
            "Messages a durable consumer has not finished: not yet delivered plus delivered and "
            "unacknowledged (num_pending + num_ack_pending)",
            labels=["consumer"],
        )
        in_flight = GaugeMetricFamily(
            "aether_consumer_ack_pending",
            "Messages of a durable consumer delivered and not yet acknowledged (being worked on)",
            labels=["consumer"],
        )
        for name, pending, ack_pending in self._consumers:
            backlog.add_metric([name], pending + ack_pending)
            in_flight.add_metric([name], ack_pending)
        yield backlog
        yield in_flight

        agents = GaugeMetricFamily(
            "aether_agents",
            "Agents in the agent pool (the agents bucket) able to serve each agent type, by role "
            "and status; an agent serving several types counts under each, a master under its "
            "id; experts whose record expired are not counted",
            labels=["agent_type", "role", "status"],
        )
        for (agent_type, role, status), count in sorted(self._agent_counts().items()):
            agents.add_metric([agent_type, role, status], count)
        yield agents

        tasks = GaugeMetricFamily("aether_tasks", "Tasks by status", labels=["status"])
        by_status = self.index.count_by_status()
        for status in TaskStatus:
            tasks.add_metric([status.value], by_status.get(status, 0))
        yield tasks

    def _agent_counts(self) -> Tally[tuple[str, str, str]]:
        fresh_after = utcnow() - timedelta(seconds=AGENT_TTL_S)
        counts: Tally[tuple[str, str, str]] = Tally()
        for raw in list(self.agents.values.values()):
            with contextlib.suppress(ValueError):
                record = AgentRecord.model_validate_json(raw)
                if record.role == "expert" and record.last_seen < fresh_after:
                    continue
                for agent_type in self._served(record):
                    counts[(agent_type, record.role, record.status.value)] += 1
        return counts

    def _served(self, record: AgentRecord) -> list[str]:
        if record.role != "expert":
            return [record.agent_type]
        if record.agent_type == ANY_TYPE:
            return list(self.registry.agent_types)
        return [t for t in record.agent_type.split(",") if t]


class OpenStreams(Collector):
    def __init__(self, streams: StreamHub) -> None:
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "aether_streams_open", "Live streams (SSE and WebSocket) this gateway serves", value=self.streams.open_streams
        )


class GatewayMetrics:
    """One per app, so a process may build several apps (tests) without registering twice."""

    def __init__(
        self, runtime: Runtime, index: TaskIndex, agents: KVMirror, registry: Registry, streams: StreamHub
    ) -> None:
        self.shared = SharedState(runtime, index, agents, registry)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.shared)
        self.registry.register(OpenStreams(streams))

    async def render(self) -> tuple[bytes, str]:
        await self.shared.refresh()
        body, content_type = await metrics.render()
        return body + generate_latest(self.registry), content_type
