"""Prometheus metrics of one service process, served at `/metrics` (the NATS services on their
probe port, the gateway on its HTTP port). The `aether_llm_*` series count the calls a process
made itself; tokens are also counted per subtask and per task with their outcome, which holds
when the agents that made the calls are processes nobody scrapes.

Each process counts what it did itself. Task and subtask outcomes are counted where the outcome
is written: a compare-and-set on the task state succeeds exactly once per transition, so summing
over every process and replica counts each outcome once, redeliveries and duplicates included.
Gauges of shared state (backlog of every consumer, agents per type, tasks per status) are the
gateway's (aether_gateway.metrics), because no single worker sees all of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from aether_contracts import subjects
from aether_contracts.state import SubtaskStatus, TaskState, TaskStatus, Usage

if TYPE_CHECKING:
    from faststream._internal.types import BrokerMiddleware

Snapshot = tuple[TaskStatus, dict[str, SubtaskStatus]]

TASK_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
SUBTASK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800)
LLM_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)

TASKS_FINISHED = Counter(
    "aether_tasks_finished",
    "Tasks that reached a terminal status, by outcome (completed, failed, cancelled)",
    ["outcome"],
)
TASK_DURATION = Histogram(
    "aether_task_duration_seconds",
    "Time from a task's creation to its terminal status, by outcome",
    ["outcome"],
    buckets=TASK_BUCKETS,
)
SUBTASKS_FINISHED = Counter(
    "aether_subtasks_finished",
    "Subtasks that reached a terminal status, by agent type and outcome "
    "(completed, failed, blocked: failed because a dependency failed, cancelled)",
    ["agent_type", "outcome"],
)
SUBTASK_DURATION = Histogram(
    "aether_subtask_duration_seconds",
    "Time a subtask ran (started to finished), by agent type and outcome",
    ["agent_type", "outcome"],
    buckets=SUBTASK_BUCKETS,
)
SUBTASK_TOKENS = Counter(
    "aether_subtask_tokens",
    "LLM tokens of finished subtasks, by agent type and type (input, output); counted with the "
    "outcome, so it holds however the agents run",
    ["agent_type", "type"],
)
TASK_TOKENS = Counter(
    "aether_task_tokens",
    "LLM tokens of finished tasks (planning, subtasks, synthesis), by type (input, output)",
    ["type"],
)
LLM_REQUESTS = Counter(
    "aether_llm_requests",
    "LLM requests (every attempt), by role, requested model and outcome (ok or the error)",
    ["role", "model", "outcome"],
)
LLM_DURATION = Histogram(
    "aether_llm_request_duration_seconds",
    "Duration of one LLM request (one attempt), by role and requested model",
    ["role", "model"],
    buckets=LLM_BUCKETS,
)
LLM_TOKENS = Counter(
    "aether_llm_tokens",
    "LLM tokens used, by role, model and type (input, output)",
    ["role", "model", "type"],
)


def snapshot(state: TaskState) -> Snapshot:
    return state.status, {s.id: s.status for s in state.subtasks}


def record_transition(before: Snapshot, after: TaskState) -> None:
    """Count what became terminal between `before` and the state just written."""
    task_before, subtasks_before = before
    for subtask in after.subtasks:
        if not subtask.status.terminal:
            continue
        previous = subtasks_before.get(subtask.id)
        if previous is not None and previous.terminal:
            continue
        outcome = subtask.status.value
        if subtask.status == SubtaskStatus.FAILED and subtask.blocked_by:
            outcome = "blocked"
        SUBTASKS_FINISHED.labels(subtask.agent_type, outcome).inc()
        _add_tokens(SUBTASK_TOKENS, subtask.usage, subtask.agent_type)
        if subtask.started_at is not None and subtask.completed_at is not None:
            seconds = (subtask.completed_at - subtask.started_at).total_seconds()
            SUBTASK_DURATION.labels(subtask.agent_type, outcome).observe(max(0.0, seconds))
    if after.status.terminal and not task_before.terminal:
        outcome = after.status.value
        TASKS_FINISHED.labels(outcome).inc()
        _add_tokens(TASK_TOKENS, after.usage)
        if after.completed_at is not None:
            seconds = (after.completed_at - after.created_at).total_seconds()
            TASK_DURATION.labels(outcome).observe(max(0.0, seconds))


def _add_tokens(counter: Counter, usage: Usage, *labels: str) -> None:
    if usage.prompt_tokens:
        counter.labels(*labels, "input").inc(usage.prompt_tokens)
    if usage.completion_tokens:
        counter.labels(*labels, "output").inc(usage.completion_tokens)


def record_llm_request(
    role: str, model: str, outcome: str, seconds: float, input_tokens: int = 0, output_tokens: int = 0
) -> None:
    LLM_REQUESTS.labels(role, model, outcome).inc()
    LLM_DURATION.labels(role, model).observe(seconds)
    if input_tokens:
        LLM_TOKENS.labels(role, model, "input").inc(input_tokens)
    if output_tokens:
        LLM_TOKENS.labels(role, model, "output").inc(output_tokens)


def broker_middleware(service: str) -> BrokerMiddleware:
    """FastStream's own counters: messages received, processed (by status), published; with
    subjects that carry an id labelled by their pattern (`subjects.metric_label`)."""
    from faststream.nats.prometheus.provider import (
        BatchNatsMetricsSettingsProvider,
        NatsMetricsSettingsProvider,
        settings_provider_factory,
    )
    from faststream.prometheus import PrometheusMiddleware

    class ByPattern:
        def get_publish_destination_name_from_cmd(self, cmd):
            return subjects.metric_label(super().get_publish_destination_name_from_cmd(cmd))

        def get_consume_attrs_from_message(self, msg):
            attrs = super().get_consume_attrs_from_message(msg)
            return {**attrs, "destination_name": subjects.metric_label(attrs["destination_name"])}

    class Single(ByPattern, NatsMetricsSettingsProvider):
        pass

    class Batch(ByPattern, BatchNatsMetricsSettingsProvider):
        pass

    def by_pattern(msg):
        provider = settings_provider_factory(msg)
        if isinstance(provider, BatchNatsMetricsSettingsProvider):
            return Batch()
        return Single() if isinstance(provider, NatsMetricsSettingsProvider) else provider

    # The default registry: it already carries the process collectors (CPU, memory, fds), and
    # FastStream reuses its metrics when a process builds more than one broker (tests).
    return PrometheusMiddleware(
        settings_provider_factory=by_pattern, registry=REGISTRY, app_name=service, metrics_prefix="faststream"
    )


async def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
