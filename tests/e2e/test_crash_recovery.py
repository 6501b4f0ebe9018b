"""A crashed service loses no task: kill -9 a real process mid-work, the supervisor restarts it."""

import asyncio

import pytest

from tests.support.plans import scripted, subtask
from tests.support.services import eventually

pytestmark = pytest.mark.e2e


async def test_scheduler_killed_while_a_subtask_runs_and_the_task_still_completes(stack):
    # The executor service is the scheduler; the LLM call runs in an agent process that is not
    # touched (agent crashes are tests/e2e/test_agents.py). The finished event waits in its
    # durable consumer until the restarted scheduler handles it.
    plan = scripted("Crash me", [subtask("long", "python-backend", sim="latency_ms=1500"), subtask("next", "fullstack", ["long"])])
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        await stack.wait_task(client, created["id"], until={"executing"})

        async def expert_call_in_flight():
            return await stack.sim_requests(client, task_id=created["id"], role="expert")

        # The kill must land while the call runs (it lasts 1.5 s), not before it: waited for,
        # not assumed after a number of polls.
        await eventually(expert_call_in_flight, timeout=10)
        old = stack.kill("executor")
        await stack.wait_restarted("executor", old)
        task = await stack.wait_task(client, created["id"], timeout=150)
    assert task["status"] == "completed", task["logs"]
    assert [s["attempts"] for s in task["subtasks"]] == [1, 1]
    assert sum("completed by" in line for line in task["logs"]) == 2  # each subtask recorded once


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
