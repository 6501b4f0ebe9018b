"""The pool manager: reads each agent type's backlog and the plans in flight, starts and stops
agents through a backend, announces what happened, and on start-up adopts or removes what an
earlier instance left.

No broker in here: publishing and NATS requests are passed in as functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from aether_contracts import topology
from aether_contracts.agents import AGENT_TTL_S, AgentRecord, AgentStatus, agent_key
from aether_contracts.events import AgentEvent
from aether_contracts.state import SubtaskStatus, TaskState, TaskStatus, utcnow
from aether_core.mirror import KVMirror

from .backends import AgentBackend
from .pool import AgentView, Phase, PoolDecision, PoolPolicy, decide, plan_width, share_starts

log = logging.getLogger("aether.container_manager")

Publish = Callable[[AgentEvent], Awaitable[None]]
AskAgent = Callable[[str, str], Awaitable[bool]]
"""Ask an agent to stop and hand its work back; True if it answered."""
ReadTask = Callable[[str], Awaitable[TaskState | None]]

PLAN_REREAD_S = 30.0
"""A plan in flight is read again at least this often: a missed `task.finished` (core NATS, no
replay) must not keep its agents up for ever."""


@dataclass
class Managed:
    id: str
    agent_type: str
    runtime_id: str
    started: float = field(default_factory=time.monotonic)
    registered: bool = False
    adopted: bool = False
    stop_reason: str | None = None
    stopper: asyncio.Task | None = None


class PoolManager:
    def __init__(
        self,
        backend: AgentBackend,
        policies: dict[str, PoolPolicy],
        *,
        agents: KVMirror,
        publish: Publish,
        ask_agent: AskAgent,
        agent_env: dict[str, str],
        start_timeout_s: float,
        stop_timeout_s: float,
        read_task: ReadTask | None = None,
        max_starting: int = 4,
    ) -> None:
        self.backend = backend
        self.read_task = read_task
        self.max_starting = max_starting
        """Agents starting at once (started, not yet registered), across the types."""
        self.policies = policies
        self.js: JetStreamContext | None = None
        self.agents_kv: KeyValue | None = None
        self.agents = agents
        self.publish = publish
        self.ask_agent = ask_agent
        self.agent_env = agent_env
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.managed: dict[str, Managed] = {}
        self.last_decisions: dict[str, PoolDecision] = {}
        self._lock = asyncio.Lock()
        self._blind_at: float | None = None
        """When a reconciliation last failed (NATS not answering this manager)."""
        self.plans: dict[str, dict[str, int]] = {}
        """Per task in flight, the width per agent type of what it has still to run."""
        self._plans_read: dict[str, float] = {}
        self._plans_dirty: set[str] = set()
        self.woken = asyncio.Event()

    # -- start-up -------------------------------------------------------------------------------
    def bind(self, js: JetStreamContext, agents_kv: KeyValue) -> None:
        """Connections exist only once the service started; the manager is built before."""
        self.js, self.agents_kv = js, agents_kv

    async def reconcile(self) -> None:
        """Adopt the running agents an earlier instance started; remove the dead ones."""
        for found in await self.backend.discover():
            if found.running and found.agent_type in self.policies:
                log.info("adopting %s agent %s (%s)", found.agent_type, found.agent_id, found.runtime_id)
                self.managed[found.agent_id] = Managed(
                    found.agent_id, found.agent_type, found.runtime_id, registered=True, adopted=True
                )
            else:
                log.info("removing leftover agent %s (%s)", found.agent_id, found.runtime_id)
                if found.running:
                    await self.backend.stop(found.runtime_id, self.stop_timeout_s)
                await self.backend.remove(found.runtime_id)

    # -- the loop -------------------------------------------------------------------------------
    async def run(self, interval_s: float) -> None:
        """Reconcile every `interval_s`, and at once when a plan is ready."""
        while True:
            self.woken.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._blind_at = time.monotonic()
                log.exception("pool reconciliation failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), interval_s)

    # -- the plans in flight --------------------------------------------------------------------
    def plan_ready(self, task_id: str) -> None:
        """A plan (or a new round of one) is ready: its agents can start before its subtasks queue."""
        if self.read_task is not None:
            self._plans_dirty.add(task_id)
            self.woken.set()

    def subtask_finished(self, task_id: str) -> None:
        if task_id in self.plans:
            self._plans_dirty.add(task_id)

    def task_finished(self, task_id: str) -> None:
        self.plans.pop(task_id, None)
        self._plans_read.pop(task_id, None)
        self._plans_dirty.discard(task_id)

    async def _read_plans(self) -> None:
        if self.read_task is None:
            return
        stale = time.monotonic() - PLAN_REREAD_S
        dirty = self._plans_dirty | {t for t, at in self._plans_read.items() if at < stale}
        self._plans_dirty = set()
        await asyncio.gather(*(self._read_plan(task_id) for task_id in dirty))

    async def _read_plan(self, task_id: str) -> None:
        assert self.read_task is not None
        try:
            state = await self.read_task(task_id)
        except Exception as exc:  # NATS unavailable a moment: read it on the next tick
            log.debug("cannot read task %s for its plan: %s", task_id, exc)
            self._plans_dirty.add(task_id)
            return
        # Waiting for approval, nothing runs (the approval makes the plan ready again).
        if state is None or state.status.terminal or state.status == TaskStatus.AWAITING_APPROVAL:
            self.task_finished(task_id)
            return
        remaining = [
            s for s in state.subtasks if not s.status.terminal and s.status != SubtaskStatus.AWAITING_INPUT
        ]
        width = plan_width(remaining)
        if not width:
            self.task_finished(task_id)
            return
        self.plans[task_id] = width
        self._plans_read[task_id] = time.monotonic()

    def planned(self, agent_type: str) -> int:
        """How many subtasks of the type the plans in flight can run at once."""
        return sum(width.get(agent_type, 0) for width in self.plans.values())

    async def tick(self) -> None:
        async with self._lock:
            await self._reap()
            await self._watch_registrations()
            await self._read_plans()
            now = utcnow()
            wanted: dict[str, tuple[int, int]] = {}
            for agent_type, policy in self.policies.items():
                backlog = await self.backlog(agent_type)
                views = self._views(agent_type, now)
                decision = decide(policy, max(backlog, self.planned(agent_type)), views, now)
                self.last_decisions[agent_type] = decision
                wanted[agent_type] = (min(decide(policy, backlog, views, now).start, decision.start), decision.start)
                for agent_id in decision.stop:
                    self._stop_later(self.managed[agent_id], f"idle for over {policy.idle_timeout_s:.0f}s")
            starting = sum(1 for a in self.managed.values() if not a.registered and a.stop_reason is None)
            starts = share_starts(wanted, self.max_starting - starting)
            # Concurrently: a container's creation takes seconds on some storage drivers.
            await asyncio.gather(*(self._start(t) for t, n in starts.items() for _ in range(n)))

    async def backlog(self, agent_type: str) -> int:
        """Queued, in-flight and handed-back subtasks of the type: what its consumer must finish.

        A message nacked while no agent pulls (an agent that handed its work back and exited)
        sits in the consumer's redelivery queue, counted in neither `num_pending` nor
        `num_ack_pending` (seen on nats-server 2.15), only in `num_redelivered`. Leaving it out
        would strand that subtask with no agent ever started for it; counting it twice while
        it is in flight again at worst starts one agent more, within the maximum.
        """
        assert self.js is not None  # bound at the start, before the loop runs
        try:
            info = await self.js.consumer_info(topology.STREAM, topology.worker_consumer(agent_type).durable)
        except NotFoundError:
            return 0
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0) + int(info.num_redelivered or 0)

    def records(self) -> dict[str, AgentRecord]:
        records = {}
        for key, raw in list(self.agents.values.items()):
            with contextlib.suppress(ValueError):
                records[key] = AgentRecord.model_validate_json(raw)
        return records

    def _views(self, agent_type: str, now) -> list[AgentView]:
        records = self.records()
        views = []
        for agent in self.managed.values():
            if agent.agent_type != agent_type:
                continue
            record = records.get(agent_key(agent.id))
            if agent.stop_reason is not None:
                phase, idle_since = Phase.STOPPING, None
            elif record is not None and record.status in (AgentStatus.IDLE, AgentStatus.BUSY) and record.alive(now):
                phase = Phase.IDLE if record.status == AgentStatus.IDLE else Phase.BUSY
                idle_since = record.idle_since
            else:
                phase, idle_since = Phase.STARTING, None
            views.append(AgentView(agent.id, phase, idle_since))
        # Workers someone else runs (an `all` executor, a pod) count as capacity, never stopped.
        for record in records.values():
            if record.id in self.managed or not record.serves(agent_type) or not record.alive(now):
                continue
            if record.status in (AgentStatus.IDLE, AgentStatus.BUSY):
                phase = Phase.IDLE if record.status == AgentStatus.IDLE else Phase.BUSY
                views.append(AgentView(record.id, phase, None))
        return views

    async def _start(self, agent_type: str) -> None:
        agent_id = f"{agent_type}-{secrets.token_hex(3)}"
        begun = time.monotonic()  # before the backend call: creating a container is part of it
        runtime_id = await self.backend.start(agent_id, agent_type, self.agent_env)
        self.managed[agent_id] = Managed(agent_id, agent_type, runtime_id, started=begun)
        record = AgentRecord(
            id=agent_id,
            name=f"{agent_type} agent {agent_id}",
            role="expert",
            agent_type=agent_type,
            backend=self.backend.name,
            runtime_id=runtime_id,
            status=AgentStatus.STARTING,
        )
        assert self.agents_kv is not None  # bound at the start, before the loop runs
        await self.agents_kv.put(agent_key(agent_id), record.to_bytes())
        log.info("starting %s agent %s (%s %s)", agent_type, agent_id, self.backend.name, runtime_id)

    async def _watch_registrations(self) -> None:
        now = utcnow()
        records = self.records()
        for agent in list(self.managed.values()):
            record = records.get(agent_key(agent.id))
            working = record is not None and record.status in (AgentStatus.IDLE, AgentStatus.BUSY)
            if working and record is not None and record.alive(now):
                if not agent.registered:
                    agent.registered = True
                    elapsed = time.monotonic() - agent.started
                    await self._announce(agent, "started", f"registered {elapsed:.1f}s after its start")
            elif agent.stop_reason is not None:
                continue
            elif not agent.registered:
                if time.monotonic() - agent.started > self.start_timeout_s:
                    self._stop_later(agent, f"did not register within {self.start_timeout_s:.0f}s", failed=True)
            elif record is None or working:
                # Registered once, silent now: hung or cut off from NATS. Replace it, unless NATS
                # did not answer this manager either a moment ago (a node lost, a partition):
                # the agent's heartbeats failed as ours did, and it gets the time to write one
                # again. Replaced, it would lose the subtask it was finishing (issue 18).
                if self._blind_at is not None and time.monotonic() - self._blind_at < AGENT_TTL_S:
                    continue
                self._stop_later(agent, "stopped sending heartbeats", failed=True)

    async def _reap(self) -> None:
        agents = list(self.managed.values())
        codes = await asyncio.gather(*(self.backend.exit_code(a.runtime_id) for a in agents))
        gone = [(a, code) for a, code in zip(agents, codes, strict=True) if code is not None]
        await asyncio.gather(*(self.backend.remove(a.runtime_id) for a, _ in gone))
        for agent, code in gone:
            del self.managed[agent.id]
            record = self.records().get(agent_key(agent.id))
            if agent.stop_reason is not None:
                failed = agent.stop_reason.startswith("failed: ")
                reason = agent.stop_reason.removeprefix("failed: ")
            elif record is not None and record.status in (AgentStatus.STOPPING, AgentStatus.STOPPED):
                failed, reason = False, record.error or "stopped on request"
            else:
                failed, reason = True, f"exited unexpectedly with code {code}"
            status = AgentStatus.FAILED if failed else AgentStatus.STOPPED
            if record is None:
                record = AgentRecord(
                    id=agent.id, name=f"{agent.agent_type} agent {agent.id}", role="expert",
                    agent_type=agent.agent_type, backend=self.backend.name,
                    runtime_id=agent.runtime_id,
                )
            record.status = status
            record.error = reason
            record.current_task = record.current_subtask = None
            record.last_seen = utcnow()
            with contextlib.suppress(Exception):
                assert self.agents_kv is not None  # bound before any agent was managed
                await self.agents_kv.put(agent_key(agent.id), record.to_bytes())
            await self._announce(agent, "failed" if failed else "stopped", reason)
            log.info("agent %s %s: %s", agent.id, status.value, reason)

    async def _announce(self, agent: Managed, kind: str, reason: str) -> None:
        await self.publish(
            AgentEvent(
                agent_id=agent.id,
                agent_type=agent.agent_type,
                kind=kind,
                backend=self.backend.name,
                runtime_id=agent.runtime_id,
                reason=reason,
            )
        )

    # -- stopping -------------------------------------------------------------------------------
    def _stop_later(self, agent: Managed, reason: str, *, failed: bool = False, hand_back: bool = False) -> None:
        if agent.stop_reason is not None:
            return
        agent.stop_reason = f"failed: {reason}" if failed else reason
        agent.stopper = asyncio.create_task(self._stop(agent, hand_back))

    async def _stop(self, agent: Managed, hand_back: bool) -> None:
        if hand_back and await self.ask_agent(agent.id, agent.stop_reason or "stop"):
            # It gives its subtask back and exits by itself; make sure it does.
            deadline = time.monotonic() + self.stop_timeout_s
            while time.monotonic() < deadline:
                if await self.backend.exit_code(agent.runtime_id) is not None:
                    return
                await asyncio.sleep(0.2)
            log.warning("agent %s accepted to stop but is still running; signalling it", agent.id)
        elif hand_back:
            log.warning("agent %s did not answer the stop request; signalling it", agent.id)
        await self.backend.stop(agent.runtime_id, self.stop_timeout_s)

    async def stop_agent(self, agent_id: str, reason: str) -> bool:
        """Stop one agent now, handing its work back. False if this manager does not run it."""
        agent = self.managed.get(agent_id)
        if agent is None:
            return False
        self._stop_later(agent, reason, hand_back=True)
        return True

    async def shutdown(self) -> None:
        log.info("stopping %d agent(s)", len(self.managed))
        for agent in list(self.managed.values()):
            self._stop_later(agent, "the container-manager is stopping", hand_back=True)
        stoppers = [a.stopper for a in self.managed.values() if a.stopper is not None]
        if stoppers:
            await asyncio.wait(stoppers, timeout=self.stop_timeout_s + 10)
        await self._reap()
