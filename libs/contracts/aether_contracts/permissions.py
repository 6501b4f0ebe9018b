"""What each service may publish and subscribe to on NATS, derived from the subjects it uses.

`nats_authorization` renders a nats-server `authorization` block with one user per service, so a
service that is compromised (or buggy) cannot publish on subjects it has no business with: the
planner cannot dispatch subtasks, an agent cannot finish a task, only the gateway creates tasks.

JetStream itself needs its API (`$JS.API.>`: stream and consumer info, pulls, KV), acks
(`$JS.ACK.>`), flow control (`$JS.FC.>`, for KV watches) and inboxes for replies. The API
subjects are allowed whole: every service declares the topology at start-up (one definition,
idempotent), which needs create and update rights.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import subjects
from .topology import (
    AGENTS_BUCKET,
    LLM_SLOTS_BUCKET,
    QUOTAS_BUCKET,
    SERVICES_BUCKET,
    TASKS_BUCKET,
    WORKSPACE_BUCKET,
)

JETSTREAM_PUBLISH = ("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "_INBOX.>")
JETSTREAM_SUBSCRIBE = ("_INBOX.>",)


def kv(bucket: str) -> str:
    return f"$KV.{bucket}.>"


def objects(bucket: str) -> str:
    """An Object Store bucket's chunks and metadata (reads go through `$JS.API`)."""
    return f"$O.{bucket}.>"


@dataclass(frozen=True)
class Grant:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = ()


GRANTS: dict[str, Grant] = {
    "gateway": Grant(
        publish=(
            subjects.TASK_CREATED,
            subjects.TASK_FINISHED,
            subjects.PLAN_READY,
            subjects.REPLAN_REQUESTED,
            f"{subjects.DEADLINE_PREFIX}.>",
            subjects.TASK_CONTROL,
            f"{subjects.AGENT_CONTROL_PREFIX}.*",
            subjects.MANAGER_CONTROL,
            kv(TASKS_BUCKET),
            kv(SERVICES_BUCKET),
            kv(AGENTS_BUCKET),
            kv(QUOTAS_BUCKET),
        ),
    ),
    "planner": Grant(
        publish=(subjects.PLAN_READY, kv(TASKS_BUCKET), kv(SERVICES_BUCKET), kv(LLM_SLOTS_BUCKET)),
        subscribe=(subjects.TASK_CONTROL,),
    ),
    "executor": Grant(  # the scheduler
        publish=(
            f"{subjects.SUBTASK_READY_PREFIX}.*",
            subjects.SYNTHESIS_REQUESTED,
            subjects.TASK_FINISHED,
            subjects.REPLAN_REQUESTED,
            subjects.TASK_CONTROL,
            kv(TASKS_BUCKET),
            kv(SERVICES_BUCKET),
        ),
    ),
    "agent": Grant(  # executor workers
        publish=(
            subjects.SUBTASK_FINISHED,
            kv(TASKS_BUCKET),
            kv(AGENTS_BUCKET),
            kv(SERVICES_BUCKET),
            kv(LLM_SLOTS_BUCKET),
            objects(WORKSPACE_BUCKET),
        ),
        subscribe=(subjects.TASK_CONTROL, f"{subjects.AGENT_CONTROL_PREFIX}.*"),
    ),
    "synthesizer": Grant(
        publish=(subjects.TASK_FINISHED, kv(TASKS_BUCKET), kv(SERVICES_BUCKET), kv(LLM_SLOTS_BUCKET), objects(WORKSPACE_BUCKET)),
        subscribe=(subjects.TASK_CONTROL,),
    ),
    "container-manager": Grant(
        publish=(
            f"{subjects.AGENT_EVENTS_PREFIX}.>",
            f"{subjects.AGENT_CONTROL_PREFIX}.*",
            kv(AGENTS_BUCKET),
            kv(SERVICES_BUCKET),
        ),
        subscribe=(subjects.MANAGER_CONTROL,),
    ),
}


def _quoted(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def nats_authorization(passwords: dict[str, str]) -> str:
    """A nats-server `authorization { users = [...] }` block; `passwords` maps service to password
    (bcrypt hashes are accepted by nats-server too)."""
    users = []
    for service, grant in GRANTS.items():
        if service not in passwords:
            continue
        publish = (*grant.publish, *JETSTREAM_PUBLISH)
        subscribe = (*grant.subscribe, *JETSTREAM_SUBSCRIBE)
        users.append(
            f'    {{user: "{service}", password: "{passwords[service]}", permissions: {{\n'
            f"      publish: {{allow: {_quoted(publish)}}}\n"
            f"      subscribe: {{allow: {_quoted(subscribe)}}}\n"
            "    }}"
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
