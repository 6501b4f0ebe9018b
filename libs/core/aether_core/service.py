"""What every FastStream service needs: a broker, the topology, heartbeats, reliable handlers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import nats
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.errors import NoRespondersError, NoServersError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue

from aether_contracts import subjects, topology
from aether_contracts.events import MSG_ID_HEADER
from aether_contracts.permissions import TOPOLOGY
from aether_contracts.services import ServiceHeartbeat
from aether_contracts.state import utcnow

from . import declare, metrics, telemetry
from .config import ServiceSettings
from .errors import HandBack, RetryLater
from .probe import Metrics, ProbeServer
from .store import TaskStore
from .templates import load_registry

log = logging.getLogger("aether")

PUBLISH_TIMEOUT_S = 5.0
"""How long a publish waits for the stream's ack before it is repeated (same id: stored once)."""
PUBLISH_ATTEMPTS = 3

HEARTBEAT_EVERY_S = 2.0
PING_INTERVAL_S = 3
MAX_OUTSTANDING_PINGS = 2
"""A connection to a node that dropped off the network gets no reset, only silence: after about
10 s without an answer to its pings the client moves to another node of the cluster (nats-py's
defaults, 120 s and 2, kept it on the dead node for four minutes, and the pool replaced agents
that were only waiting there; issue 18, tests/chaos/test_partition.py)."""
GRACEFUL_TIMEOUT_S = 30.0
"""How long a stopping service lets its handlers finish what they hold (FastStream's graceful
timeout); the stop timeout (aether_core.stopping, AETHER_STOP_TIMEOUT_S) is longer."""
HAND_BACK_DELAY_S = 1.0
TOPOLOGY_POLL_S = 1.0
TOPOLOGY_LOG_EVERY_S = 10.0
WORK_STREAM = JStream(topology.STREAM, declare=False)
ALL_BUCKETS = tuple(b.name for b in topology.BUCKETS)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per LLM request at INFO drowns what matters; the task log records the calls.
    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def setup_telemetry(settings: ServiceSettings, service: str) -> None:
    """Tracing as the `OTEL_*` variables ask (nothing when none is set). Before `make_broker`."""
    telemetry.setup(settings, service, settings.instance_id)


def inbox(settings: ServiceSettings, service: str) -> str:
    """The inbox prefix of the NATS user this service connects as (the URL's, else its own name):
    the only inbox that user may subscribe to (aether_contracts.permissions)."""
    return subjects.inbox_prefix(settings.nats_user or service)


def make_broker(settings: ServiceSettings, service: str, **kwargs: Any) -> NatsBroker:
    return NatsBroker(
        settings.nats_servers,
        name=f"aether-{service}-{settings.instance_id}",
        inbox_prefix=inbox(settings, service),
        middlewares=(*telemetry.broker_middlewares(), metrics.broker_middleware(service)),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        # FastStream logs every message at this level; keep it out of INFO at our rates.
        log_level=logging.DEBUG,
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        **kwargs,
    )


def subscription(
    spec: topology.ConsumerSpec, *, max_workers: int, batch: int = 1, inbox_prefix: str | None = None
) -> dict[str, Any]:
    """Keyword arguments binding a FastStream pull subscriber to one of our durable consumers.

    Acks are explicit (`settle`), never FastStream's default `REJECT_ON_ERROR`, which would
    terminate a message whose handler failed once. FastStream gives pull subscribers an inbox
    prefix of their own (`_INBOX.`), not the broker's: a service passes its own (`inbox`), or
    the messages it fetches would go to an inbox its NATS user may not subscribe to.
    """
    options: dict[str, Any] = {
        "subject": spec.subject,
        "stream": WORK_STREAM,
        "durable": spec.durable,
        "config": spec.config(),
        "pull_sub": PullSub(batch_size=batch, timeout=5.0),
        "max_workers": max_workers,
        "ack_policy": AckPolicy.MANUAL,
    }
    if inbox_prefix is not None:
        options["inbox_prefix"] = f"{inbox_prefix}.".encode()
    return options


def deliveries(msg: NatsMessage) -> int:
    try:
        return int(msg.raw_message.metadata.num_delivered)
    except Exception:  # a core NATS message (tests) has no JetStream metadata
        return 1


def redelivery_delay_s(delivered: int) -> float:
    return min(30.0, 0.25 * 2 ** (delivered - 1))


@contextlib.asynccontextmanager
async def settle(
    msg: NatsMessage,
    spec: topology.ConsumerSpec,
    *,
    give_up: Callable[[BaseException], Awaitable[None]] | None = None,
    keep_alive: bool = True,
) -> AsyncIterator[None]:
    """Ack when the body succeeds; redeliver with backoff when it fails; give up at the end.

    While the body runs, `in_progress` is sent every third of `ack_wait`, so work longer than
    `ack_wait` (an LLM call) keeps its message instead of being redelivered to someone else.
    On the last allowed delivery a failure calls `give_up` (which records the failure in the
    task state) and the message is acked, so nothing is retried forever and nothing hangs.
    """
    beat = asyncio.create_task(_keep_alive(msg, spec.ack_wait_s / 3)) if keep_alive else None
    try:
        yield
    except RetryLater as early:
        log.debug("%s: retrying later: %s", spec.durable, early)
        await msg.nack(delay=early.delay_s)
    except HandBack:
        # The agent is stopping on purpose: no backoff, just long enough for its last pull
        # request to lapse, so that another agent takes the message.
        with contextlib.suppress(Exception):
            await msg.nack(delay=HAND_BACK_DELAY_S)
    except asyncio.CancelledError:
        # Shutting down mid-work: hand the message back at once for another instance.
        with contextlib.suppress(Exception):
            await msg.nack()
        raise
    except Exception as exc:
        delivered = deliveries(msg)
        if delivered >= spec.max_deliver and give_up is not None:
            log.error("%s: giving up after %d deliveries: %r", spec.durable, delivered, exc)
            try:
                await give_up(exc)
            except Exception:
                log.exception("%s: give_up failed; the message will be redelivered", spec.durable)
                await msg.nack(delay=redelivery_delay_s(delivered))
                return
            await msg.ack()
            return
        log.warning(
            "%s: handler failed (delivery %d), redelivering: %r", spec.durable, delivered, exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        await msg.nack(delay=redelivery_delay_s(delivered))
    else:
        await msg.ack()
    finally:
        if beat is not None:
            beat.cancel()


async def _keep_alive(msg: NatsMessage, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()


class Runtime:
    """The connections a service holds; filled in by `start` once the broker is connected.

    `buckets`: the KV buckets the service uses (the others are left as None: its NATS user may
    not even look at them).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        broker: NatsBroker,
        service: str,
        *,
        buckets: Iterable[str] = ALL_BUCKETS,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.service = service
        self.buckets = tuple(buckets)
        self.inbox = inbox(settings, service)
        self.consumers: list[topology.ConsumerSpec] = []
        """The durable consumers bound with `subscription`: they must exist before the start."""
        self.js: JetStreamContext | None = None
        self.tasks_kv: KeyValue | None = None
        self.services_kv: KeyValue | None = None
        self.agents_kv: KeyValue | None = None
        self.store = TaskStore()
        self.detail: dict[str, Any] = {"tracing": telemetry.description()}
        self.probe: ProbeServer | None = None
        self.metrics: Metrics | None = metrics.render
        """Served at `/metrics` on the probe endpoint."""
        self._heartbeat: asyncio.Task[None] | None = None
        self.started_at = utcnow()

    def subscription(self, spec: topology.ConsumerSpec, *, max_workers: int, batch: int = 1) -> dict[str, Any]:
        """`subscription` with this service's inbox; the consumer must exist before the start."""
        self.consumers.append(spec)
        return subscription(spec, max_workers=max_workers, batch=batch, inbox_prefix=self.inbox)

    async def start(self) -> None:
        """Connect, wait for the topology this service uses, then heartbeat (and serve probes)."""
        await self.broker.connect()
        self.js = self.broker.connection.jetstream()
        await self.wait_for_topology()
        opened = {bucket: await self.js.key_value(bucket) for bucket in self.buckets}
        self.tasks_kv = opened.get(topology.TASKS_BUCKET)
        self.services_kv = opened.get(topology.SERVICES_BUCKET)
        self.agents_kv = opened.get(topology.AGENTS_BUCKET)
        if self.tasks_kv is not None:
            self.store.bind(self.tasks_kv)
        await self.beat()
        self._heartbeat = asyncio.create_task(self._beat_forever())
        if self.settings.probe_port is not None:
            self.probe = ProbeServer(
                self.settings.probe_host, self.settings.probe_port, self.ready, self.metrics
            )
            await self.probe.start()

    async def wait_for_topology(self) -> None:
        """Services do not declare the topology (one party does: `declare_topology`); they wait,
        saying so, until what they use is there."""
        assert self.js is not None
        started = time.monotonic()
        said = None
        while True:
            try:
                absent = await declare.missing(self.js, self.buckets, self.consumers)
            except (TimeoutError, NoRespondersError, ServiceUnavailableError) as exc:  # not up yet, or refused
                absent = [f"an answer from JetStream ({exc!r})"]
            if not absent:
                if said is not None:
                    log.info("%s: the topology is there; starting", self.service)
                return
            if said is None or time.monotonic() - said >= TOPOLOGY_LOG_EVERY_S:
                said = time.monotonic()
                log.warning(
                    "%s: waiting for the topology (%.0fs so far); missing: %s. It is declared by "
                    "`python -m aether_gateway topology` as the NATS user `topology` (make up "
                    "runs it first; on Kubernetes the gateway's init container does)",
                    self.service, said - started, ", ".join(absent),
                )
            await asyncio.sleep(TOPOLOGY_POLL_S)

    async def ready(self) -> bool:
        """NATS connected and the KV store answering (the task store, for those that have it)."""
        kv = self.tasks_kv or self.services_kv
        if kv is None or not self.broker.connection.is_connected:
            return False
        await kv.status()
        return True

    async def stop(self) -> None:
        if self.probe is not None:
            await self.probe.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.services_kv is not None:
            with contextlib.suppress(Exception):
                await self.services_kv.delete(self.heartbeat().key)

    def heartbeat(self) -> ServiceHeartbeat:
        return ServiceHeartbeat(
            service=self.service,
            instance=self.settings.instance_id,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=self.started_at,
            detail=self.detail,
        )

    async def beat(self) -> None:
        assert self.services_kv is not None
        beat = self.heartbeat()
        await self.services_kv.put(beat.key, beat.model_dump_json().encode())

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            try:
                await self.beat()
            except Exception as exc:  # NATS away: keep trying, the reconnect will come
                log.warning("heartbeat failed: %r", exc)

    async def record(self, event: Any, subject: str) -> None:
        """Store an event on the work stream that no service consumes (an expert's step log),
        deduplicated by its id; on the connection, not through the broker: its subject carries
        ids, which the broker's middlewares would make a metric label and a span name."""
        assert self.js is not None
        await self.js.publish(
            subject,
            event.model_dump_json().encode(),
            timeout=PUBLISH_TIMEOUT_S,
            stream=topology.STREAM,
            headers={MSG_ID_HEADER: event.dedup_id(), "content-type": "application/json"},
        )

    async def schedule(self, event: Any, subject: str, *, at: datetime, target: str) -> None:
        """Have NATS publish `event` on `target` at `at` (a JetStream message schedule held on
        `subject`: one schedule per subject, a new one replaces it).

        Published on the connection, not through the broker: the holding subject carries an id
        (a task's), and the broker's middlewares would make it a metric label and a span name.
        """
        assert self.js is not None
        headers = {
            "Nats-Schedule": f"@at {at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
            "Nats-Schedule-Target": target,
            "content-type": "application/json",
        }
        if traceparent := telemetry.current_traceparent():
            headers["traceparent"] = traceparent  # what fires at `at` joins this trace
        await self.js.publish(
            subject, event.model_dump_json().encode(), timeout=PUBLISH_TIMEOUT_S, stream=topology.STREAM, headers=headers
        )

    async def publish(self, event: Any, subject: str) -> None:
        """Persist an event on the work stream, deduplicated by the event's own id.

        A stream's ack can be late on a busy machine (FastStream waits 0.5 s by default): the
        publish is repeated with the same id, which the stream stores once, instead of failing
        the handler, whose message would come back and redo work that was in fact recorded.
        """
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self.broker.publish(
                    event,
                    subject,
                    headers={MSG_ID_HEADER: event.dedup_id()},
                    stream=topology.STREAM,
                    timeout=PUBLISH_TIMEOUT_S,
                )
                return
            except (TimeoutError, NoRespondersError, NoStreamResponseError, json.JSONDecodeError) as exc:
                # JSONDecodeError: nats-py parses the first reply as the ack; an empty one came
                # from a core subscriber on a stream subject answering the request (FastStream
                # replies unless `no_reply`; the container-manager's listeners did). Still no
                # ack, and the repeat carries the same id.
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                log.warning("publish to %s unacknowledged (attempt %d), repeating: %r", subject, attempt, exc)
                await asyncio.sleep(0.2 * attempt)


async def declare_topology(settings: ServiceSettings, *, timeout_s: float = 300.0) -> list[str]:
    """Create or update the stream, the buckets and every consumer, for the agent types of the
    registry in use (custom ones from AETHER_AGENTS_DIR included), as the NATS user `topology`.

    The one place that declares (`python -m aether_gateway topology`). Not a long-running
    service: the rights to create and change streams and consumers stay out of every process
    that handles tasks, the internet-facing gateway first. NATS may still be starting: the
    connection and the declaration are retried until `timeout_s`. Returns the agent types.
    """
    agent_types = load_registry(settings.agents_dir).agent_types
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = await nats.connect(
                settings.nats_servers,
                name=f"aether-topology-{settings.instance_id}",
                inbox_prefix=inbox(settings, TOPOLOGY),
                allow_reconnect=False,
                connect_timeout=5,
            )
            try:
                await declare.ensure_topology(
                    connection.jetstream(timeout=10), agent_types, replicas=settings.nats_replicas
                )
            finally:
                await connection.close()
            return agent_types
        except (OSError, TimeoutError, NoRespondersError, NoServersError, ServiceUnavailableError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("declaring the topology: %r; retrying", exc)
            await asyncio.sleep(1)
