"""Who may do what on NATS: one user per service, each allowed only what that service does.

A `Grant` says what a service uses — the subjects it publishes and listens on, the durable
consumers it pulls from, the KV buckets it reads, watches or writes, the Object Store — and
`nats_authorization` translates that, here and nowhere else, into the subjects nats-server
checks (issue 19):

- Replies. Every request (JetStream's API included) is answered on the requester's inbox. Each
  user has an inbox prefix of its own (`subjects.inbox_prefix`) and may subscribe only there, so
  nobody reads another's replies. A service that answers requests (an agent told to stop) gets
  `allow_responses`: it may publish once to the reply subject of a request it received.
- The work stream. Pulling from a durable consumer is a request to
  `$JS.API.CONSUMER.MSG.NEXT.AETHER.<durable>`, acknowledging a publish to
  `$JS.ACK.AETHER.<durable>.>`: a user may do both only for its own durables, so the agent cannot
  read `task.created` (the planner's consumer) nor create a consumer of its own on the stream.
- KV. A read is a direct get (`$JS.API.DIRECT.GET.KV_<bucket>…`, buckets on one replica) or a
  message get (`$JS.API.STREAM.MSG.GET.KV_<bucket>`, replicated ones); a write is a publish to
  `$KV.<bucket>.<key>`; a watch is an ordered consumer created on `KV_<bucket>`, with flow control
  on `$JS.FC.KV_<bucket>.>`. Heartbeats are keyed `<service>.<instance>`, so each service writes
  only its own in `services`.
- Topology. Only the `topology` user creates or updates streams and creates consumers (see
  `aether_core.service.declare_topology`); no user may delete or purge a stream or a consumer.
  The worker consumers are one per agent type, and agent types can be added
  (`AETHER_AGENTS_DIR`), so the grants are rendered for the agent types of the registry in use.

What stays wide, and why:

- `tasks`: the gateway, the planner, the scheduler, the agents and the synthesizer change a task
  by compare-and-set on its whole state (key = task id). Tenants are API keys, not NATS users,
  so NATS cannot tell one tenant's task from another's: each of these may read and rewrite any
  task. Tenant isolation is the gateway's (`aether_gateway.auth`).
- `agents`: a record per agent, keyed by its id; agents, the container-manager and the gateway
  (masters) write there, and an agent id is one key token, so one agent could rewrite another's
  record (what the pool shows, not what runs a task).
- `aether.control.agent.*`: every agent listens on the stop requests of every agent (its own id
  is not known when the users are made), and so could answer for another.
- The workspace Object Store: agents and the synthesizer write it; names hold their content's
  digest, but a writer could still overwrite another object's metadata. Nobody may purge it, so
  the chunks of a write that failed halfway stay behind.
- `admin` (`ADMIN`) may do everything: it exists only for tests and operators under `make up`
  (they create consumers, read every event and rewrite records), and no service connects as it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from . import subjects, topology
from .topology import (
    AGENTS_BUCKET,
    LLM_SLOTS_BUCKET,
    QUOTAS_BUCKET,
    SERVICES_BUCKET,
    STREAM,
    TASKS_BUCKET,
    WORKSPACE_BUCKET,
)

TOPOLOGY = "topology"
"""The one user that declares the stream, the buckets and the consumers."""
ADMIN = "admin"
"""Every right: tests and operators only (the devstack makes it; Kubernetes does not)."""

API = "$JS.API"
EVERYTHING = (">",)


@dataclass(frozen=True)
class Grant:
    publish: tuple[str, ...] = ()
    """Events and core NATS subjects it publishes, or sends requests to."""
    subscribe: tuple[str, ...] = ()
    """Core NATS subjects it listens on (broadcasts, requests it answers)."""
    answers: bool = False
    """It replies to requests it receives (`allow_responses`)."""
    pulls: tuple[str, ...] = ()
    """Durable consumers of the work stream it pulls from and acknowledges."""
    inspects: tuple[str, ...] = ()
    """Durable consumers whose state (backlog) it reads."""
    lists_consumers: bool = False
    """Reads the state of every consumer of the work stream at once (the gateway's metrics)."""
    reads: tuple[str, ...] = ()
    """KV buckets it reads by key."""
    watches: tuple[str, ...] = ()
    """KV buckets it follows with a watch (which sees every value, so implies reading)."""
    writes: tuple[tuple[str, str], ...] = ()
    """(bucket, keys) it writes, keys a subject pattern such as `>` or `planner.>`."""
    workspace: Literal["", "read", "write"] = ""
    """The Object Store bucket `workspace`."""
    declares: bool = False
    """Creates and updates the stream, the buckets and the consumers."""
    reads_steps: bool = False
    """Reads experts' steps back from the work stream by subject (message gets on `AETHER`)."""

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every KV bucket it opens, in a stable order."""
        used = {*self.reads, *self.watches, *(bucket for bucket, _ in self.writes)}
        return tuple(b.name for b in topology.BUCKETS if b.name in used)

    def union(self, other: Grant) -> Grant:
        """Both grants (a process that is two services: the executor running its own workers)."""
        merged: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, tuple):
                merged[f.name] = tuple(dict.fromkeys((*mine, *theirs)))
            elif isinstance(mine, bool):
                merged[f.name] = mine or theirs
            else:
                merged[f.name] = max(mine, theirs, key=("", "read", "write").index)
        return replace(self, **merged)


LLM_SLOTS = (LLM_SLOTS_BUCKET, ">")
"""The LLM callers share the endpoints' slots (aether_core.llm_slots)."""


def heartbeats(service: str) -> tuple[str, str]:
    """Its own records in `services` (key `<service>.<instance>`, aether_contracts.services)."""
    return (SERVICES_BUCKET, f"{service}.>")


def grants(agent_types: Iterable[str], *, workers_in_executor: bool = False) -> dict[str, Grant]:
    """Every service's grant, for these agent types. `workers_in_executor`: the executor runs the
    workers itself (`AETHER_EXECUTOR_ROLE=all`), so its user has the agent's grant too."""
    workers = tuple(topology.worker_consumer(t).durable for t in agent_types)
    table = {
        "gateway": Grant(
            publish=(
                subjects.TASK_CREATED,
                subjects.TASK_FINISHED,
                subjects.PLAN_READY,
                subjects.REPLAN_REQUESTED,
                f"{subjects.DEADLINE_PREFIX}.*",
                subjects.TASK_CONTROL,
                f"{subjects.AGENT_CONTROL_PREFIX}.*",
                subjects.MANAGER_CONTROL,
            ),
            subscribe=(f"{subjects.STEP_PREFIX}.>",),  # experts' steps, live, for the task streams
            reads_steps=True,
            lists_consumers=True,
            reads=(TASKS_BUCKET, QUOTAS_BUCKET),
            watches=(TASKS_BUCKET, SERVICES_BUCKET, AGENTS_BUCKET),
            writes=((TASKS_BUCKET, ">"), heartbeats("gateway"), (AGENTS_BUCKET, ">"), (QUOTAS_BUCKET, ">")),
            workspace="read",
        ),
        "planner": Grant(
            # approval: the deadline of a plan that waits for a person (issue 15)
            publish=(subjects.PLAN_READY, f"{subjects.APPROVAL_DEADLINE_PREFIX}.*"),
            subscribe=(subjects.TASK_CONTROL,),
            pulls=(topology.PLANNER.durable, topology.PLANNER_REPLAN.durable),
            reads=(TASKS_BUCKET, LLM_SLOTS_BUCKET),
            writes=((TASKS_BUCKET, ">"), heartbeats("planner"), LLM_SLOTS),
        ),
        "executor": Grant(  # the scheduler
            publish=(
                f"{subjects.SUBTASK_READY_PREFIX}.*",
                subjects.SYNTHESIS_REQUESTED,
                subjects.TASK_FINISHED,
                subjects.REPLAN_REQUESTED,
                subjects.TASK_CONTROL,
                f"{subjects.DEADLINE_PREFIX}.*",  # a task deadline postponed while a person is asked
            ),
            pulls=tuple(
                spec.durable
                for spec in (topology.SCHEDULER_PLANS, topology.SCHEDULER_FINISHED, topology.SCHEDULER_EXPIRED)
            ),
            reads=(TASKS_BUCKET,),
            watches=(AGENTS_BUCKET,),
            writes=((TASKS_BUCKET, ">"), heartbeats("executor")),
        ),
        "agent": Grant(  # executor workers
            # question deadlines: an expert asked a person (subtask ids may hold dots)
            publish=(subjects.SUBTASK_FINISHED, f"{subjects.STEP_PREFIX}.*.*", f"{subjects.QUESTION_DEADLINE_PREFIX}.>"),
            subscribe=(subjects.TASK_CONTROL, f"{subjects.AGENT_CONTROL_PREFIX}.*"),
            answers=True,
            pulls=workers,
            reads=(TASKS_BUCKET, LLM_SLOTS_BUCKET),
            writes=((TASKS_BUCKET, ">"), heartbeats("agent"), (AGENTS_BUCKET, ">"), LLM_SLOTS),
            workspace="write",
        ),
        "synthesizer": Grant(
            publish=(subjects.TASK_FINISHED, subjects.PLAN_READY),  # plan.ready: a fix-up round
            subscribe=(subjects.TASK_CONTROL,),
            pulls=(topology.SYNTHESIZER.durable,),
            reads=(TASKS_BUCKET, LLM_SLOTS_BUCKET),
            writes=((TASKS_BUCKET, ">"), heartbeats("synthesizer"), LLM_SLOTS),
            workspace="write",
        ),
        "container-manager": Grant(
            publish=(f"{subjects.AGENT_EVENTS_PREFIX}.*", f"{subjects.AGENT_CONTROL_PREFIX}.*"),
            # the plans: agents start when a plan is ready, before its subtasks queue (issue 14)
            subscribe=(subjects.MANAGER_CONTROL, subjects.PLAN_READY, subjects.SUBTASK_FINISHED, subjects.TASK_FINISHED),
            answers=True,
            inspects=workers,
            reads=(TASKS_BUCKET,),
            watches=(AGENTS_BUCKET,),
            writes=(heartbeats("container-manager"), (AGENTS_BUCKET, ">")),
        ),
        TOPOLOGY: Grant(declares=True),
    }
    if workers_in_executor:
        table["executor"] = table["executor"].union(table["agent"])
    return table


USERS = tuple(grants(()))
"""The NATS users, one per service and `topology` (plus `admin` under `make up`)."""


def _read(bucket_stream: str) -> tuple[str, ...]:
    return (
        f"{API}.DIRECT.GET.{bucket_stream}",
        f"{API}.DIRECT.GET.{bucket_stream}.>",
        f"{API}.STREAM.MSG.GET.{bucket_stream}",
    )


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


WORKSPACE_STREAM = f"OBJ_{WORKSPACE_BUCKET}"


def _declaring(agent_types: Iterable[str]) -> list[str]:
    streams = [STREAM, *(_kv_stream(b.name) for b in topology.BUCKETS), WORKSPACE_STREAM]
    allowed = [f"{API}.STREAM.{verb}.{s}" for s in streams for verb in ("CREATE", "UPDATE", "INFO")]
    for spec in topology.consumers(agent_types):
        allowed.append(f"{API}.CONSUMER.CREATE.{STREAM}.{spec.durable}.{spec.subject}")
    return allowed


def publish_allowed(grant: Grant, agent_types: Iterable[str] = ()) -> list[str]:
    """The subjects this grant may publish to, as nats-server checks them."""
    allowed = list(grant.publish)
    allowed.append(f"{API}.STREAM.INFO.{STREAM}")
    for durable in grant.pulls:
        allowed += [
            f"{API}.CONSUMER.INFO.{STREAM}.{durable}",
            f"{API}.CONSUMER.MSG.NEXT.{STREAM}.{durable}",
            f"$JS.ACK.{STREAM}.{durable}.>",
        ]
    allowed += [f"{API}.CONSUMER.INFO.{STREAM}.{durable}" for durable in grant.inspects]
    if grant.lists_consumers:
        allowed.append(f"{API}.CONSUMER.LIST.{STREAM}")
    for bucket in grant.buckets:
        allowed.append(f"{API}.STREAM.INFO.{_kv_stream(bucket)}")
    for bucket in dict.fromkeys((*grant.reads, *grant.watches)):
        allowed += _read(_kv_stream(bucket))
    for bucket in grant.watches:
        stream = _kv_stream(bucket)
        # An ordered consumer has no name until the server gives it one (nats-py creates it
        # with `CONSUMER.CREATE.<stream>`); it lives only on the bucket's stream.
        allowed += [
            f"{API}.CONSUMER.CREATE.{stream}",
            f"{API}.CONSUMER.INFO.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]
    allowed += [f"$KV.{bucket}.{keys}" for bucket, keys in grant.writes]
    if grant.workspace:
        allowed += [f"{API}.STREAM.INFO.{WORKSPACE_STREAM}", *_read(WORKSPACE_STREAM)]
    if grant.workspace == "write":
        allowed.append(f"$O.{WORKSPACE_BUCKET}.>")
    if grant.reads_steps:
        allowed.append(f"{API}.STREAM.MSG.GET.{STREAM}")
    if grant.declares:
        allowed += _declaring(agent_types)
    return list(dict.fromkeys(allowed))


def subscribe_allowed(grant: Grant, user: str) -> list[str]:
    return [*grant.subscribe, f"{subjects.inbox_prefix(user)}.>"]


def _quoted(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def nats_authorization(
    passwords: dict[str, str], agent_types: Iterable[str], *, workers_in_executor: bool = False
) -> str:
    """A nats-server `authorization { users = [...] }` block for the users in `passwords` (user
    -> password; bcrypt hashes are accepted by nats-server too), for these agent types."""
    agent_types = list(agent_types)
    table = grants(agent_types, workers_in_executor=workers_in_executor)
    users = []
    for user, password in passwords.items():
        if user == ADMIN:
            publish, subscribe, answers = list(EVERYTHING), list(EVERYTHING), False
        else:
            grant = table[user]
            publish = publish_allowed(grant, agent_types)
            subscribe = subscribe_allowed(grant, user)
            answers = grant.answers
        users.append(
            f'    {{user: "{user}", password: "{password}", permissions: {{\n'
            f"      publish: {{allow: {_quoted(publish)}}}\n"
            f"      subscribe: {{allow: {_quoted(subscribe)}}}\n"
            + ("      allow_responses: true\n" if answers else "")
            + "    }}"
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
