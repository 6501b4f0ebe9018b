"""Each service gets its own NATS user, allowed only what it does (aether_contracts.permissions):
a task still flows end to end through the real services, each connected as its own user, and
every user is refused what it has no business with — another service's subjects, a bucket it
does not write, the stream's deletion or purge, a consumer of its own on the work stream (which
would read every `task.created`), another user's replies — with nothing changed by the attempt."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError

from aether_contracts import subjects, topology
from aether_contracts.events import SubtaskReady, TaskCreated
from aether_contracts.permissions import ADMIN, TOPOLOGY, USERS, nats_authorization
from aether_contracts.state import TaskState, TaskStatus
from aether_core.config import ServiceSettings
from aether_core.service import declare_topology
from aether_core.store import TaskStore
from aether_core.templates import load_registry
from tests.support.nats import NatsServer
from tests.support.plans import scripted, subtask
from tests.support.services import executor_app, planner_app, synthesizer_app, wait_status

PASSWORDS = {user: secrets.token_urlsafe(16) for user in (*USERS, ADMIN)}
AGENT_TYPES = load_registry(None).agent_types
SERVICES = [u for u in USERS if u != TOPOLOGY]


class As:
    """The server, as seen with one user's credentials (what a service's settings take)."""

    def __init__(self, server: NatsServer, user: str) -> None:
        self.user = user
        self.url = server.url.replace("nats://", f"nats://{user}:{PASSWORDS[user]}@")


async def connect(server: NatsServer, user: str, **options) -> nats.NATS:
    return await nats.connect(As(server, user).url, inbox_prefix=subjects.inbox_prefix(user), **options)


def secured_server() -> NatsServer:
    return NatsServer(extra_config=nats_authorization(PASSWORDS, AGENT_TYPES)).start()


@pytest.fixture(scope="module")
async def secured_nats():
    """One secured server, its topology declared by the `topology` user, as `make up` does."""
    server = secured_server()
    await declare_topology(ServiceSettings(nats_url=As(server, TOPOLOGY).url), timeout_s=30)
    yield server
    server.stop()


async def test_a_task_flows_through_services_that_each_have_only_their_own_rights(secured_nats, simulator):
    gateway = await connect(secured_nats, "gateway")
    js = gateway.jetstream()
    store = TaskStore(await js.key_value(topology.TASKS_BUCKET))
    description = scripted("Secured", [subtask("a", "database-expert"), subtask("b", "fullstack", ["a"])])
    state = TaskState(id="secured", description=description)
    await store.create(state)
    async with (
        planner_app(As(secured_nats, "planner"), simulator),
        executor_app(As(secured_nats, "executor"), simulator, role="scheduler"),
        executor_app(As(secured_nats, "agent"), simulator, role="worker", agent_id="agent-secured"),
        synthesizer_app(As(secured_nats, "synthesizer"), simulator),
    ):
        await js.publish(subjects.TASK_CREATED, TaskCreated(task_id="secured", description=description).model_dump_json().encode())
        done = await wait_status(store, "secured", {TaskStatus.COMPLETED, TaskStatus.FAILED}, timeout=60)
    assert done.status == TaskStatus.COMPLETED, [e.message for e in done.events]
    await gateway.close()
    violations = [line for line in secured_nats.log_path.read_text().splitlines() if " Violation - " in line]
    assert not violations, "\n".join(violations[:20])


@pytest.mark.parametrize(
    ("service", "subject"),
    [
        ("planner", subjects.subtask_ready("fullstack")),
        ("planner", subjects.TASK_CREATED),
        ("agent", subjects.TASK_CREATED),
        ("agent", subjects.SYNTHESIS_REQUESTED),
        ("synthesizer", subjects.SUBTASK_FINISHED),
        ("container-manager", "$KV.tasks.anything"),
        ("executor", subjects.agent_event("started")),
        ("planner", "$O.workspace.C.forged"),
    ],
)
async def test_a_service_cannot_publish_outside_its_subjects(secured_nats, service, subject):
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    admin = await connect(secured_nats, ADMIN)
    before = (await admin.jetstream().stream_info(topology.STREAM)).state.messages

    nc = await connect(secured_nats, service, error_cb=on_error)
    event = SubtaskReady(task_id="t", subtask_id="s", agent_type="fullstack")
    await nc.publish(subject, event.model_dump_json().encode())
    await nc.flush()
    for _ in range(50):
        if errors:
            break
        await asyncio.sleep(0.05)
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    assert (await admin.jetstream().stream_info(topology.STREAM)).state.messages == before
    await nc.close()
    await admin.close()


# -- what each user must not do ---------------------------------------------------------------

Action = Callable[[nats.NATS], Awaitable[object]]
REFUSAL_WAIT_S = 1.5
"""A refused request is never answered: how long an attempt waits for its refusal."""


@dataclass(frozen=True)
class Attempt:
    what: str
    subject: str
    """The subject the server must name in its permissions violation."""
    action: Action


def js(nc: nats.NATS):
    return nc.jetstream(timeout=REFUSAL_WAIT_S)


def publishing(subject: str, what: str = "") -> Attempt:
    return Attempt(what or f"publish {subject}", subject, lambda nc: nc.publish(subject, b"{}"))


def putting(bucket: str, key: str) -> Attempt:
    async def put(nc: nats.NATS) -> None:
        await js(nc).publish(f"$KV.{bucket}.{key}", b"forged")

    return Attempt(f"put {bucket}/{key}", f"$KV.{bucket}.{key}", put)


def subscribing(subject: str) -> Attempt:
    async def subscribe(nc: nats.NATS) -> None:
        await nc.subscribe(subject)
        await nc.flush()

    return Attempt(f"subscribe {subject}", subject, subscribe)


def everyones(user: str) -> list[Attempt]:
    """What no user but `admin` may do."""
    other = "planner" if user != "planner" else "gateway"
    stream = topology.STREAM

    async def read_task_created(nc: nats.NATS) -> None:
        # An ordered consumer of its own: the way to read every task description on the stream.
        await js(nc).subscribe(subjects.TASK_CREATED, stream=stream, ordered_consumer=True)

    async def durable_of_its_own(nc: nats.NATS) -> None:
        config = ConsumerConfig(durable_name="intruder", name="intruder", filter_subject=subjects.TASK_CREATED,
                                deliver_policy=DeliverPolicy.ALL)
        await js(nc).add_consumer(stream, config=config)

    declaring = [] if user == TOPOLOGY else [
        Attempt("change the stream", f"$JS.API.STREAM.UPDATE.{stream}", lambda nc: js(nc).update_stream(config=topology.stream_config())),
        Attempt("create a bucket", "$JS.API.STREAM.CREATE.KV_forged",
                lambda nc: js(nc).create_key_value(bucket="forged")),
    ]
    return [
        *declaring,
        Attempt("delete the stream", f"$JS.API.STREAM.DELETE.{stream}", lambda nc: js(nc).delete_stream(stream)),
        Attempt("purge the stream", f"$JS.API.STREAM.PURGE.{stream}", lambda nc: js(nc).purge_stream(stream)),
        Attempt("delete the tasks bucket", "$JS.API.STREAM.DELETE.KV_tasks", lambda nc: js(nc).delete_stream("KV_tasks")),
        Attempt("read task.created with a consumer of its own", f"$JS.API.CONSUMER.CREATE.{stream}", read_task_created),
        Attempt("create a durable consumer", f"$JS.API.CONSUMER.CREATE.{stream}.intruder.{subjects.TASK_CREATED}", durable_of_its_own),
        Attempt("delete the planner's consumer", f"$JS.API.CONSUMER.DELETE.{stream}.planner",
                lambda nc: js(nc).delete_consumer(stream, "planner")),
        subscribing("_INBOX.>"),
        subscribing(f"{subjects.inbox_prefix(other)}.>"),
        subscribing(">"),
    ]


FORBIDDEN: dict[str, list[Attempt]] = {
    "gateway": [
        publishing(subjects.subtask_ready("fullstack")),
        publishing(subjects.SUBTASK_FINISHED, "forge a finished subtask"),
        publishing(subjects.SYNTHESIS_REQUESTED),
        putting("services", "planner.forged"),
    ],
    "planner": [
        publishing(subjects.TASK_CREATED),
        publishing(subjects.subtask_ready("fullstack")),
        putting("agents", "forged"),
        putting("services", "executor.forged"),
        publishing(f"$JS.API.CONSUMER.MSG.NEXT.{topology.STREAM}.synthesizer", "pull the synthesizer's work"),
    ],
    "executor": [
        publishing(subjects.TASK_CREATED),
        publishing(subjects.agent_event("started")),
        putting("agents", "forged"),
        publishing(f"$JS.API.CONSUMER.MSG.NEXT.{topology.STREAM}.planner", "pull the planner's work"),
    ],
    "agent": [
        publishing(subjects.TASK_CREATED),
        publishing(subjects.SYNTHESIS_REQUESTED),
        publishing(subjects.TASK_FINISHED),
        publishing(subjects.TASK_CONTROL, "cancel another tenant's task"),
        putting("services", "planner.forged"),
        publishing(f"$JS.API.CONSUMER.MSG.NEXT.{topology.STREAM}.planner", "pull task.created"),
        publishing(f"$JS.ACK.{topology.STREAM}.planner.1.1.1.1.1", "ack the planner's message"),
    ],
    "synthesizer": [
        publishing(subjects.TASK_CREATED, "create a task"),  # (plan.ready it may: a fix-up round)
        publishing(subjects.subtask_ready("fullstack")),
        putting("agents", "forged"),
    ],
    "container-manager": [
        publishing(subjects.SUBTASK_FINISHED, "forge a finished subtask"),
        putting("tasks", "forged"),  # it reads a task's plan (issue 14), never writes one
        publishing(subjects.PLAN_READY, "forge a ready plan"),  # it hears them only
        publishing(f"$JS.API.CONSUMER.MSG.NEXT.{topology.STREAM}.executor-fullstack", "pull an agent's work"),
    ],
    TOPOLOGY: [
        publishing(subjects.TASK_CREATED),
        putting("tasks", "forged"),
        Attempt("read a task", "$JS.API.DIRECT.GET.KV_tasks.$KV.tasks.forged",
                lambda nc: js(nc).get_msg("KV_tasks", subject="$KV.tasks.forged", direct=True)),
    ],
}


async def refused(server: NatsServer, user: str, attempt: Attempt) -> str | None:
    """None if the server refused the attempt, naming its subject; else what happened."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await connect(server, user, error_cb=on_error, allow_reconnect=False)
    outcome = "went through"
    try:
        await attempt.action(nc)
        await nc.flush()
    except Exception as exc:  # a refused request times out; what matters is the server's word
        outcome = f"failed with {exc!r} but was not refused"
    deadline = asyncio.get_running_loop().time() + REFUSAL_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        # nats-py reports the server's words in lower case
        if any("permissions violation" in e.lower() and f'"{attempt.subject.lower()}"' in e.lower() for e in errors):
            break
        await asyncio.sleep(0.05)
    else:
        return f"{user}: {attempt.what}: {outcome}; errors: {errors}"
    with contextlib.suppress(Exception):
        await nc.close()
    return None


async def snapshot(server: NatsServer) -> dict:
    admin = await connect(server, ADMIN)
    try:
        jetstream = admin.jetstream()
        info = await jetstream.stream_info(topology.STREAM)
        consumers = sorted(c.name for c in await jetstream.consumers_info(topology.STREAM))
        forged = {}
        for bucket in ("tasks", "agents", "services"):
            kv = await jetstream.key_value(bucket)
            for key in ("forged", "planner.forged", "executor.forged"):
                with contextlib.suppress(KeyNotFoundError):
                    forged[f"{bucket}/{key}"] = (await kv.get(key)).value
        return {"messages": info.state.messages, "consumers": consumers, "forged": forged}
    finally:
        await admin.close()


@pytest.mark.parametrize("user", [*SERVICES, TOPOLOGY])
async def test_each_user_is_refused_what_it_has_no_business_with(secured_nats, user):
    before = await snapshot(secured_nats)
    attempts = [*everyones(user), *FORBIDDEN[user]]
    outcomes = await asyncio.gather(*(refused(secured_nats, user, a) for a in attempts))
    assert not [o for o in outcomes if o], "\n".join(o for o in outcomes if o)
    after = await snapshot(secured_nats)
    assert after == before
    assert not after["forged"]
    assert {spec.durable for spec in topology.consumers(AGENT_TYPES)} <= set(after["consumers"])


async def test_another_users_replies_never_reach_a_user(secured_nats):
    """Replies go to the requester's inbox, which only the requester may subscribe to."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    eavesdropper = await connect(secured_nats, "agent", error_cb=on_error)
    heard = []

    async def overhear(msg) -> None:
        heard.append(msg)

    await eavesdropper.subscribe(f"{subjects.inbox_prefix('gateway')}.>", cb=overhear)
    await eavesdropper.flush()
    gateway = await connect(secured_nats, "gateway")
    kv = await gateway.jetstream().key_value(topology.TASKS_BUCKET)
    await kv.put("replies-test", b"a reply to the gateway's request")
    await kv.get("replies-test")  # its reply comes to the gateway's inbox
    await asyncio.sleep(0.5)
    assert not heard
    assert any("permissions violation for subscription" in e.lower() for e in errors), errors
    await kv.delete("replies-test")
    await gateway.close()
    await eavesdropper.close()


async def test_services_wait_for_the_topology_instead_of_declaring_it(simulator, caplog):
    server = secured_server()
    try:
        app = planner_app(As(server, "planner"), simulator)
        starting = asyncio.create_task(app.__aenter__())
        await asyncio.sleep(3)
        assert not starting.done(), "the planner started without a topology"
        assert "waiting for the topology" in caplog.text and "stream AETHER" in caplog.text
        admin = await connect(server, ADMIN)
        assert not [name async for name in _stream_names(admin)], "a service declared something"
        await declare_topology(ServiceSettings(nats_url=As(server, TOPOLOGY).url), timeout_s=30)
        await asyncio.wait_for(starting, 30)
        assert (await admin.jetstream().consumer_info(topology.STREAM, topology.PLANNER.durable)).name == "planner"
        await app.__aexit__(None, None, None)
        await admin.close()
    finally:
        server.stop()


async def _stream_names(nc: nats.NATS):
    for name in await nc.jetstream().streams_info():
        yield name.config.name


CUSTOM_AGENT = """\
kind: expert
type: rust-backend
name: Rust Backend Expert
description: Axum, Tokio, SQLx
tags: [rust, axum]
system_prompt: You are a senior Rust engineer.
"""


async def test_an_agent_type_added_by_agents_dir_is_declared_and_served_as_the_agent_user(tmp_path, simulator):
    """The declaring party and the grants load the same registry, custom types included."""
    (tmp_path / "rust.yaml").write_text(CUSTOM_AGENT)
    agent_types = load_registry(tmp_path).agent_types
    assert "rust-backend" in agent_types
    server = NatsServer(extra_config=nats_authorization(PASSWORDS, agent_types)).start()
    try:
        await declare_topology(ServiceSettings(nats_url=As(server, TOPOLOGY).url, agents_dir=tmp_path), timeout_s=30)
        worker = executor_app(
            As(server, "agent"), simulator, role="worker", agent_id="rust-agent", agent_types="rust-backend", agents_dir=tmp_path
        )
        await asyncio.wait_for(worker.__aenter__(), 30)  # it waits for its consumer: declared
        await asyncio.sleep(1)  # a pull or two
        await worker.__aexit__(None, None, None)
        admin = await connect(server, ADMIN)
        consumer = await admin.jetstream().consumer_info(topology.STREAM, "executor-rust-backend")
        assert consumer.config.filter_subject == subjects.subtask_ready("rust-backend")
        await admin.close()
    finally:
        server.stop()
    violations = [line for line in server.log_path.read_text().splitlines() if " Violation - " in line]
    assert not violations, "\n".join(violations[:20])
