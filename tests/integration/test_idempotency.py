"""Duplicate events (past the deduplication window: new message ids) change nothing twice."""

import asyncio

import nats

from aether_contracts import subjects, topology
from aether_contracts.events import PlanReady, SubtaskFinished, TaskCreated
from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus
from aether_core import declare
from aether_core.store import TaskStore
from tests.support.services import drained, eventually, executor_app, planner_app, wait_status


async def publish_twice(js, subject: str, event) -> None:
    body = event.model_dump_json().encode()
    for copy in ("a", "b"):
        await js.publish(subject, body, headers={"Nats-Msg-Id": f"{event.dedup_id()}:{copy}"})


async def test_a_duplicate_task_created_plans_once(fresh_nats, simulator):
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await declare.ensure_topology(js)
    store = TaskStore(await js.key_value(topology.TASKS_BUCKET))
    task_id = "dup-created"
    await store.create(TaskState(id=task_id, description="Build a FastAPI service [[sim latency_ms=300]]"))
    async with planner_app(fresh_nats, simulator):
        await publish_twice(js, subjects.TASK_CREATED, TaskCreated(task_id=task_id, description="x"))
        state = await wait_status(store, task_id, {TaskStatus.EXECUTING})
        await drained(js, topology.PLANNER.durable)  # the duplicate is handled too
    planner_calls = simulator.requests(task_id=task_id, role="planner")
    assert len(planner_calls) == 1
    state = await store.require(task_id)
    assert [e.kind for e in state.events].count("plan.ready") == 1
    await nc.close()


async def test_a_duplicate_subtask_finished_dispatches_dependents_once(fresh_nats, simulator):
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await declare.ensure_topology(js, ["fullstack"])
    store = TaskStore(await js.key_value(topology.TASKS_BUCKET))
    task_id = "dup-finished"
    await store.create(
        TaskState(
            id=task_id,
            description="d",
            status=TaskStatus.EXECUTING,
            subtasks=[
                Subtask(id="a", description="a", agent_type="fullstack"),
                Subtask(id="b", description="b", agent_type="fullstack", depends_on=["a"]),
                Subtask(id="c", description="c", agent_type="fullstack", depends_on=["a"]),
            ],
        )
    )

    async def ready_count() -> dict:
        info = await js.stream_info(topology.STREAM, subjects_filter=subjects.SUBTASK_READY_ANY)
        return (info.state.subjects or {}).get(subjects.subtask_ready("fullstack"), 0)

    async with executor_app(fresh_nats, simulator, role="scheduler"):
        await publish_twice(js, subjects.PLAN_READY, PlanReady(task_id=task_id))
        await eventually(lambda: _equals(ready_count, 1))
        finished = SubtaskFinished(task_id=task_id, subtask_id="a", dispatch=1, outcome="completed", result="ra")
        await publish_twice(js, subjects.SUBTASK_FINISHED, finished)
        await eventually(lambda: _equals(ready_count, 3))
        await drained(js, topology.SCHEDULER_PLANS.durable, topology.SCHEDULER_FINISHED.durable)
        assert await ready_count() == 3  # a once, then b and c once each
    state = await store.require(task_id)
    assert state.subtask("a").status == SubtaskStatus.COMPLETED
    assert [s.dispatches for s in state.subtasks] == [1, 1, 1]
    await nc.close()


async def _equals(read, expected) -> bool:
    return await read() == expected


async def test_the_planner_waits_for_the_gateways_state_write_then_restores_it_if_it_never_comes(fresh_nats, simulator):
    from datetime import timedelta

    from aether_contracts.state import utcnow

    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await declare.ensure_topology(js)
    store = TaskStore(await js.key_value(topology.TASKS_BUCKET))
    async with planner_app(fresh_nats, simulator):
        # just ahead of the gateway's write: the planner waits for it
        await js.publish(subjects.TASK_CREATED, TaskCreated(task_id="early", description="Build a FastAPI app").model_dump_json().encode())
        await asyncio.sleep(0.5)
        assert await store.get("early") is None
        written = TaskState(id="early", description="Build a FastAPI app")
        written.record("task.created", "Task created by the gateway")
        await store.create(written)
        early = await wait_status(store, "early", {TaskStatus.EXECUTING})
        assert early.events[0].message == "Task created by the gateway"

        # the gateway died between publishing and writing: the planner writes the state itself
        orphan = TaskCreated(task_id="orphan", description="Build a FastAPI app", created_at=utcnow() - timedelta(seconds=30))
        await js.publish(subjects.TASK_CREATED, orphan.model_dump_json().encode())
        restored = await wait_status(store, "orphan", {TaskStatus.EXECUTING})
        assert restored.events[0].message == "Task created (state restored by the planner)"
    await nc.close()
