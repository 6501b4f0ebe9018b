"""Services run in-process against a real nats-server (integration tests)."""

from __future__ import annotations

import asyncio
import time

from aether_core.store import TaskStore


def llm_env(simulator) -> dict:
    return {"OPENAI_BASE_URL": simulator.base_url, "OPENAI_API_KEY": "test"}


def planner_app(nats, simulator, **kw):
    from aether_planner.main import create_app
    from aether_planner.settings import PlannerSettings

    return create_app(PlannerSettings(nats_url=nats.url, instance_id="planner-test", **llm_env(simulator), **kw))


def executor_app(nats, simulator, role="all", **kw):
    kw.setdefault("instance_id", f"executor-{role}-test")
    from aether_executor.main import create_app
    from aether_executor.settings import ExecutorSettings

    return create_app(
        ExecutorSettings(nats_url=nats.url, executor_role=role, **llm_env(simulator), **kw)
    )


def synthesizer_app(nats, simulator, **kw):
    from aether_synthesizer.main import create_app
    from aether_synthesizer.settings import SynthesizerSettings

    return create_app(SynthesizerSettings(nats_url=nats.url, instance_id="synth-test", **llm_env(simulator), **kw))


async def eventually(check, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    """Poll `check` until it returns something true, and return that; a TimeoutError naming
    `what` after `timeout` s. The one polling loop of the tests: none falls through silently."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(interval)


async def drained(js, *durables: str, timeout: float = 20) -> None:
    """Every message for these durable consumers of the work stream is delivered and settled
    (acknowledged or terminated): none can be redelivered, so whatever they cause has happened.
    What a test waits for before asserting that nothing else happened, instead of a sleep."""
    from aether_contracts import topology

    async def check() -> bool:
        for durable in durables:
            info = await js.consumer_info(topology.STREAM, durable)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    await eventually(check, timeout)


async def wait_status(store: TaskStore, task_id: str, statuses, timeout: float = 20):
    async def check():
        found = await store.get(task_id)
        return found[0] if found and found[0].status in statuses else None

    return await eventually(check, timeout)
