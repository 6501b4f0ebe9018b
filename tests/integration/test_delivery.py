"""Delivery guarantees against a real nats-server: redelivery, in_progress, give-up, CAS."""

import asyncio

import nats
from faststream.nats import NatsBroker, NatsMessage

from aether_contracts import topology
from aether_contracts.events import SubtaskFinished
from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus
from aether_core import declare
from aether_core.service import settle, subscription
from aether_core.store import TaskStore
from aether_executor import scheduling
from tests.support.services import drained, eventually


async def connect(server):
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await declare.ensure_topology(js)
    return nc, js


def spec(name: str, **kw) -> topology.ConsumerSpec:
    return topology.ConsumerSpec(durable=name, subject=f"aether.task.test.{name}", **kw)


async def run_consumer(server, consumer: topology.ConsumerSpec, handler, payloads: list[dict], until, timeout=20):
    nc, js = await connect(server)
    await declare.ensure_consumer(js, consumer)
    broker = NatsBroker(server.url)
    broker.subscriber(**subscription(consumer, max_workers=4))(handler)
    async with broker:
        await broker.start()
        for payload in payloads:
            await broker.publish(payload, consumer.subject, stream=topology.STREAM)
        async def met():
            return until()

        await eventually(met, timeout=timeout, what="the handler's outcome")
        await drained(js, consumer.durable)  # settled: no extra delivery can follow
    info = await js.consumer_info(topology.STREAM, consumer.durable)
    await nc.close()
    return info


async def test_a_failed_handler_is_redelivered_and_then_acked(fresh_nats):
    consumer = spec("redeliver", ack_wait_s=5, max_deliver=5)
    calls = []

    async def handler(body: dict, msg: NatsMessage) -> None:
        async with settle(msg, consumer):
            calls.append(body["n"])
            if len(calls) == 1:
                raise RuntimeError("transient")

    info = await run_consumer(fresh_nats, consumer, handler, [{"n": 1}], until=lambda: len(calls) >= 2)
    assert calls == [1, 1]
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0


async def test_work_longer_than_ack_wait_keeps_its_message(fresh_nats):
    consumer = spec("slow", ack_wait_s=1, max_deliver=5)
    calls = []
    finished = []

    async def handler(body: dict, msg: NatsMessage) -> None:
        async with settle(msg, consumer):
            calls.append(1)
            await asyncio.sleep(2.5)  # 2.5 x ack_wait
            finished.append(1)

    info = await run_consumer(fresh_nats, consumer, handler, [{"n": 1}], until=lambda: finished, timeout=10)
    assert len(calls) == 1, "redelivered while still running: in_progress was not sent"
    assert info.num_ack_pending == 0


async def test_a_poison_message_gives_up_once_and_is_acked(fresh_nats):
    consumer = spec("poison", ack_wait_s=5, max_deliver=3)
    calls, gave_up = [], []

    async def handler(body: dict, msg: NatsMessage) -> None:
        async def give_up(exc):
            gave_up.append(repr(exc))

        async with settle(msg, consumer, give_up=give_up):
            calls.append(1)
            raise ValueError("always")

    info = await run_consumer(fresh_nats, consumer, handler, [{"n": 1}], until=lambda: gave_up)
    assert len(calls) == 3 and gave_up == ["ValueError('always')"]
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_concurrent_completions_never_lose_an_update(fresh_nats):
    nc, js = await connect(fresh_nats)
    store = TaskStore(await js.key_value(topology.TASKS_BUCKET))
    n = 48
    state = TaskState(
        id="cas-task",
        description="d",
        status=TaskStatus.EXECUTING,
        subtasks=[Subtask(id=f"s{i}", description="x", agent_type="fullstack") for i in range(n)],
    )
    scheduling.start_plan(state)
    for subtask in state.subtasks:
        subtask.status = SubtaskStatus.EXECUTING
    await store.create(state)

    async def finish(i: int):
        event = SubtaskFinished(task_id="cas-task", subtask_id=f"s{i}", dispatch=1, outcome="completed", result=f"r{i}")
        return await store.mutate("cas-task", lambda s: scheduling.finish_subtask(s, event))

    mutations = await asyncio.gather(*(finish(i) for i in range(n)))
    final = await store.require("cas-task")
    assert [s.status for s in final.subtasks] == [SubtaskStatus.COMPLETED] * n
    assert [s.result for s in final.subtasks] == [f"r{i}" for i in range(n)]
    assert final.status == TaskStatus.SYNTHESIZING
    assert sum(1 for m in mutations if m.value.synthesize) == 1, "synthesis requested exactly once"
    assert sum(m.conflicts for m in mutations) > 0, "the test did not produce contention"
    completed_events = [e for e in final.events if e.kind == "subtask.status" and e.status == "completed"]
    assert len(completed_events) == n
    assert [e.seq for e in final.events] == list(range(1, len(final.events) + 1))
    await nc.close()
