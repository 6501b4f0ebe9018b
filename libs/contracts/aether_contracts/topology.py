"""The JetStream streams, durable consumers and KV buckets, defined once: their names and settings
(shapes only; aether_core.declare does the I/O).

One party declares them, `aether_core.declare.ensure_topology` as the NATS user `topology`
(`python -m aether_gateway topology`: `make up` runs it before the services, Kubernetes in the
gateway pods' init container); every service only checks, with `aether_core.declare.missing`,
that what it uses is there, and waits until it is. So no service holds the rights to create,
change or delete a stream or a consumer (aether_contracts.permissions), and none can silently
redefine what another relies on (FastStream's own declaration is turned off with
`JStream(..., declare=False)`). Consumers are created there too, before any worker binds to
them, so a backlog can be measured (and scaled on) while no worker of that type is running.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from . import subjects
from .agents import AGENT_RECORD_MAX_AGE_S

STREAM = "AETHER"
"""The one work stream: every persisted event and every ready subtask."""

STREAM_SUBJECTS = [
    "aether.task.>",
    "aether.plan.>",
    "aether.subtask.>",
    "aether.synthesis.>",
    "aether.agent.>",
    "aether.deadline.>",
    "aether.step.>",
]
STREAM_MAX_AGE_S = 7 * 24 * 3600
DUPLICATE_WINDOW_S = 15 * 60
"""Long enough to cover a crashed service's restart; republishing inside it is free."""

TASKS_BUCKET = "tasks"
SERVICES_BUCKET = "services"
AGENTS_BUCKET = "agents"
LLM_SLOTS_BUCKET = "llm_slots"
"""Per LLM endpoint, the calls in flight when `AETHER_LLM_MAX_CONCURRENCY` limits them."""
QUOTAS_BUCKET = "quotas"
"""Per tenant, the tasks it has in progress (the gateway's `quota`), changed by compare-and-set."""
WORKSPACE_BUCKET = "workspace"
"""Object Store: the files experts write and each task's repository (see `workspace`)."""
SERVICE_TTL_S = 10.0
"""A service that has not written its heartbeat for this long is reported dead by /api/health."""


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    subject: str
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int = 1024
    description: str = ""

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            description=self.description or None,
            filter_subject=self.subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
        )


# ack_wait bounds how long a crashed instance's message waits before another takes it; live
# handlers send in_progress every third of it (aether_core.service.settle), so it does not bound
# how long work may take.
PLANNER = ConsumerSpec(
    durable="planner",
    subject=subjects.TASK_CREATED,
    ack_wait_s=20,
    max_deliver=20,
    description="planner: tasks waiting for a plan",
)
SCHEDULER_PLANS = ConsumerSpec(
    durable="scheduler-plans",
    subject=subjects.PLAN_READY,
    ack_wait_s=30,
    max_deliver=50,
    description="executor scheduler: plans whose first subtasks must be dispatched",
)
SCHEDULER_FINISHED = ConsumerSpec(
    durable="scheduler-finished",
    subject=subjects.SUBTASK_FINISHED,
    ack_wait_s=30,
    max_deliver=50,
    description="executor scheduler: finished subtasks whose dependents may now be ready",
)
SCHEDULER_EXPIRED = ConsumerSpec(
    durable="scheduler-expired",
    subject=subjects.TASK_EXPIRED,
    ack_wait_s=30,
    max_deliver=50,
    description="executor scheduler: tasks whose deadline passed",
)
PLANNER_REPLAN = ConsumerSpec(
    durable="planner-replan",
    subject=subjects.REPLAN_REQUESTED,
    ack_wait_s=20,
    max_deliver=20,
    description="planner: failed subtasks to replace with a new sub-plan",
)
SYNTHESIZER = ConsumerSpec(
    durable="synthesizer",
    subject=subjects.SYNTHESIS_REQUESTED,
    ack_wait_s=20,
    max_deliver=20,
    description="synthesizer: tasks whose subtasks are all terminal",
)
WORKER_ACK_WAIT_S = 20.0
WORKER_MAX_DELIVER = 10


def worker_consumer(agent_type: str) -> ConsumerSpec:
    """One durable consumer per agent type: its backlog is that type's queue."""
    return ConsumerSpec(
        durable=f"executor-{agent_type}",
        subject=subjects.subtask_ready(agent_type),
        ack_wait_s=WORKER_ACK_WAIT_S,
        max_deliver=WORKER_MAX_DELIVER,
        max_ack_pending=4096,
        description=f"executor workers of type {agent_type}",
    )


SERVICE_CONSUMERS = (
    PLANNER,
    PLANNER_REPLAN,
    SCHEDULER_PLANS,
    SCHEDULER_FINISHED,
    SCHEDULER_EXPIRED,
    SYNTHESIZER,
)


def consumers(agent_types: Iterable[str] = ()) -> tuple[ConsumerSpec, ...]:
    """Every durable consumer of the work stream: the services' and one per agent type."""
    return (*SERVICE_CONSUMERS, *(worker_consumer(t) for t in agent_types))


@dataclass(frozen=True)
class BucketSpec:
    name: str
    history: int = 1
    ttl_s: float | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)

    def config(self, replicas: int) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.name,
            description=self.description or None,
            history=self.history,
            ttl=self.ttl_s,
            storage=StorageType.FILE,
            replicas=replicas,
            # Direct gets skip the JetStream API (a KV read went from 0.8 ms to ~0.2 ms here).
            # Only on one replica: a follower may answer a direct get with a value older than
            # a write already acknowledged, and a worker that reads a stale state skips the
            # subtask it was handed (its dispatch is not recorded yet).
            direct=replicas == 1,
        )


BUCKETS = (
    BucketSpec(TASKS_BUCKET, description="task state, key = task id (see aether_contracts.state)"),
    BucketSpec(SERVICES_BUCKET, ttl_s=SERVICE_TTL_S, description="service heartbeats"),
    BucketSpec(
        AGENTS_BUCKET,
        ttl_s=AGENT_RECORD_MAX_AGE_S,
        description="the agent pool (see aether_contracts.agents); live agents rewrite theirs",
    ),
    BucketSpec(LLM_SLOTS_BUCKET, description="LLM calls in flight per endpoint (aether_core.llm_slots)"),
    BucketSpec(QUOTAS_BUCKET, description="tasks in progress per tenant (the gateway's admission)"),
)


def stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        description="Aether events and work queues",
        subjects=list(STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        max_age=STREAM_MAX_AGE_S,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        # Task deadlines are message schedules (nats-server 2.12+): no sweeper to run or to lose.
        allow_msg_schedules=True,
    )
