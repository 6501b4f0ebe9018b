"""A crashed service loses no task: kill -9 a real process mid-work, the supervisor restarts it."""

import asyncio

import pytest

from tests.support.plans import scripted, subtask

pytestmark = pytest.mark.e2e


async def test_executor_killed_mid_llm_call_and_the_task_still_completes(stack):
    plan = scripted("Crash me", [subtask("long", "python-backend", sim="latency_ms=1500"), subtask("next", "fullstack", ["long"])])
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        await stack.wait_task(client, created["id"], until={"executing"})
        for _ in range(100):  # wait until the expert call is in flight
            if await stack.sim_requests(client, task_id=created["id"], role="expert"):
                break
            await asyncio.sleep(0.05)
        old = stack.kill("executor")
        await stack.wait_restarted("executor", old)
        task = await stack.wait_task(client, created["id"], timeout=150)
    assert task["status"] == "completed", task["logs"]
    long = task["subtasks"][0]
    assert long["attempts"] == 2  # the redelivered message ran it again on the restarted executor
    assert sum("completed by" in line for line in task["logs"]) == 2  # each subtask recorded once
    assert any("restarted on" in line for line in task["logs"])


async def test_planner_killed_mid_plan_and_the_task_still_completes(stack):
    async with stack.client() as client:
        created = await stack.submit(client, "Build a FastAPI service [[sim planner.latency_ms=1500]]")
        await stack.wait_task(client, created["id"], until={"planning"})
        await asyncio.sleep(0.3)
        old = stack.kill("planner")
        await stack.wait_restarted("planner", old)
        task = await stack.wait_task(client, created["id"], timeout=150)
    assert task["status"] == "completed", task["logs"]
    assert any("Planning restarted" in line for line in task["logs"])
