"""Each service gets its own NATS user, allowed only the subjects it uses: a task still flows end
to end through the real services, and a service cannot publish outside its subjects."""

import asyncio
import secrets

import nats
import pytest

from aether_contracts import subjects, topology
from aether_contracts.events import SubtaskReady, TaskCreated
from aether_contracts.permissions import GRANTS, nats_authorization
from aether_contracts.state import TaskState, TaskStatus
from aether_core.store import TaskStore
from tests.support.nats import NatsServer
from tests.support.plans import scripted, subtask
from tests.support.services import executor_app, planner_app, synthesizer_app, wait_status

PASSWORDS = {service: secrets.token_urlsafe(16) for service in GRANTS}


@pytest.fixture
def secured_nats():
    server = NatsServer(extra_config=nats_authorization(PASSWORDS)).start()
    yield server
    server.stop()


class As:
    """The server, as seen with one service's credentials."""

    def __init__(self, server: NatsServer, service: str) -> None:
        self.url = server.url.replace("nats://", f"nats://{service}:{PASSWORDS[service]}@")


async def test_a_task_flows_through_services_that_each_have_only_their_own_rights(secured_nats, simulator):
    gateway = await nats.connect(As(secured_nats, "gateway").url)
    js = gateway.jetstream()
    await topology.ensure_topology(js, ["fullstack", "database-expert"])
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


@pytest.mark.parametrize(
    ("service", "subject"),
    [
        ("planner", subjects.subtask_ready("fullstack")),
        ("planner", subjects.TASK_CREATED),
        ("agent", subjects.TASK_CREATED),
        ("agent", subjects.SYNTHESIS_REQUESTED),
        ("synthesizer", subjects.PLAN_READY),
        ("container-manager", "$KV.tasks.anything"),
        ("executor", subjects.agent_event("started")),
        ("planner", "$O.workspace.C.forged"),
    ],
)
async def test_a_service_cannot_publish_outside_its_subjects(secured_nats, service, subject):
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    admin = await nats.connect(As(secured_nats, "gateway").url)
    await topology.ensure_topology(admin.jetstream())
    before = (await admin.jetstream().stream_info(topology.STREAM)).state.messages

    nc = await nats.connect(As(secured_nats, service).url, error_cb=on_error)
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
