"""The task store against a real nats-server: a change that would give two subtasks one id is not
written; the task fails, visibly, instead of waiting for a subtask that never runs (issue 19)."""

import json

import nats
import pytest

from aether_contracts import topology
from aether_contracts.state import InvalidTaskState, Subtask, SubtaskStatus, TaskState, TaskStatus
from aether_core import declare
from aether_core.store import TaskStore


@pytest.fixture
async def store(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await declare.ensure_topology(js)
    yield TaskStore(await js.key_value(topology.TASKS_BUCKET))
    await nc.close()


def executing(task_id: str, *ids: str) -> TaskState:
    return TaskState(
        id=task_id,
        description="d",
        status=TaskStatus.EXECUTING,
        subtasks=[Subtask(id=i, description=i, agent_type="fullstack") for i in ids],
    )


async def test_a_change_that_duplicates_a_subtask_id_fails_the_task_instead(store):
    await store.create(executing("store-dup-1", "a", "a.1.1"))

    def duplicate(state: TaskState) -> None:
        state.subtasks.append(Subtask(id="a.1.1", description="replacement", agent_type="fullstack"))

    with pytest.raises(InvalidTaskState, match=r"'a\.1\.1'"):
        await store.mutate("store-dup-1", duplicate)
    state = await store.require("store-dup-1")
    assert [s.id for s in state.subtasks] == ["a", "a.1.1"], "the invalid change was not written"
    assert state.status == TaskStatus.FAILED and "'a.1.1' is used by more than one subtask" in state.error
    assert [s.status for s in state.subtasks] == [SubtaskStatus.CANCELLED] * 2
    assert any(e.level == "error" and "invalid" in e.message for e in state.events)

    # Ended, it refuses the change and stays as it is.
    with pytest.raises(InvalidTaskState):
        await store.mutate("store-dup-1", duplicate)
    assert (await store.require("store-dup-1")).events == state.events


async def test_a_state_stored_with_a_duplicate_id_is_read_and_failed_at_its_next_write(store):
    # As the replan of the finding left it: two subtasks a.1.1, the task `executing` for good.
    raw = json.loads(executing("store-dup-2", "a", "a.1.1").to_bytes())
    raw["subtasks"].append({**raw["subtasks"][1], "description": "the replacement"})
    await store.kv.create("store-dup-2", json.dumps(raw).encode())

    state, _ = await store.get("store-dup-2")
    assert [s.id for s in state.subtasks] == ["a", "a.1.1", "a.1.1"]
    with pytest.raises(InvalidTaskState):
        await store.mutate("store-dup-2", lambda s: s.record("llm.retry", "any change"))
    failed = await store.require("store-dup-2")
    assert failed.status == TaskStatus.FAILED and "used by more than one subtask" in failed.error


async def test_valid_changes_are_written_as_before(store):
    await store.create(executing("store-ok", "a"))
    mutation = await store.mutate("store-ok", lambda s: s.subtasks.append(Subtask(id="b", description="b", agent_type="fullstack")) or "added")
    assert mutation.changed and mutation.value == "added"
    assert [s.id for s in (await store.require("store-ok")).subtasks] == ["a", "b"]
    with pytest.raises(InvalidTaskState):
        state = executing("store-bad", "a")
        state.subtasks.append(Subtask(id="a", description="again", agent_type="fullstack"))
        await store.create(state)
    assert await store.get("store-bad") is None
