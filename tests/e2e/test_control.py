"""Issue 8, control: cancel, retry, replan (asked for and automatic), deadlines, token budgets."""

import nats
import pytest

from aether_contracts import topology
from tests.support.plans import scripted, subtask
from tests.support.services import drained, eventually
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

CONTROL_ENV = {
    "AETHER_LLM_MAX_ATTEMPTS": "2",
    "AETHER_LLM_BACKOFF_BASE_S": "0.05",
    "AETHER_LLM_BACKOFF_MAX_S": "0.1",
    "AETHER_POOL_OVERRIDES": "fullstack:min=1;python-backend:min=1",
}


@pytest.fixture(scope="module")
def control_stack():
    running = Stack(env=CONTROL_ENV).start()
    yield running
    running.stop()


def by_id(task: dict) -> dict:
    return {s["id"]: s for s in task["subtasks"]}


async def test_cancel_stops_running_work_and_pending_work_never_starts(control_stack):
    stack = control_stack
    plan = scripted("Cancel me", [subtask("long", "fullstack", sim="latency_ms=8000"), subtask("after", "python-backend", ["long"])])
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        await stack.wait_task(client, created["id"], until={"executing"})
        await eventually(lambda: stack.sim_requests(client, task_id=created["id"], role="expert"), timeout=10)
        response = await client.post(f"/api/orchestrate/task/{created['id']}/cancel")
        assert response.status_code == 200, response.text
        task = response.json()
        assert task["status"] == "cancelled"
        assert [s["status"] for s in task["subtasks"]] == ["cancelled", "cancelled"]
        again = await client.post(f"/api/orchestrate/task/{created['id']}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
        assert (await client.post("/api/orchestrate/task/00000000-0000-7000-8000-000000000000/cancel")).status_code == 404

        # the agent was told: its LLM call is aborted (the simulator records a 499)
        async def aborted() -> bool:
            experts = await stack.sim_requests(client, task_id=created["id"], role="expert")
            return experts[0]["status"] == 499

        await eventually(aborted, timeout=10)
        final = await stack.wait_task(client, created["id"])
        # Every message the cancel caused is handled (the aborted subtask's finish included):
        # had the scheduler dispatched "after", its message would be pending or in flight.
        nc = await nats.connect(stack.nats_url)
        try:
            durables = [topology.SCHEDULER_FINISHED, topology.SCHEDULER_PLANS, *map(topology.worker_consumer, ("fullstack", "python-backend"))]
            await drained(nc.jetstream(), *(c.durable for c in durables))
        finally:
            await nc.close()
        experts = await stack.sim_requests(client, task_id=created["id"], role="expert")
    assert final["status"] == "cancelled" and final["final_result"] is None
    assert [(r["headers"]["x-aether-subtask-id"], r["status"]) for r in experts] == [("long", 499)], (
        "the running call is aborted, and the pending subtask never starts"
    )
    assert by_id(final)["long"]["result"] is None


async def test_retry_reruns_the_failed_and_the_never_run_and_keeps_the_rest(control_stack):
    stack = control_stack
    plan = scripted(
        "Retry me",
        [
            subtask("flaky", "python-backend", sim="fail=503 times=2"),
            subtask("needs-flaky", "fullstack", ["flaky"]),
            subtask("fine", "fullstack"),
        ],
    )
    async with stack.client() as client:
        first = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
        assert first["status"] == "completed"  # partially: the synthesis names what is missing
        subtasks = by_id(first)
        assert subtasks["flaky"]["status"] == "failed" and subtasks["flaky"]["retryable"] is True
        assert subtasks["needs-flaky"]["blocked_by"] == ["flaky"]
        fine_result = subtasks["fine"]["result"]

        assert (await client.post(f"/api/orchestrate/task/{first['id']}/retry", json={"subtask_ids": ["fine"]})).status_code == 409
        assert (await client.post(f"/api/orchestrate/task/{first['id']}/retry", json={"subtask_ids": ["nope"]})).status_code == 404
        assert (await client.post(f"/api/orchestrate/task/{first['id']}/retry", json={"subtask_ids": ["needs-flaky"]})).status_code == 409
        assert (await client.post(f"/api/orchestrate/task/{first['id']}/retry", json={"subtask_ids": [""]})).status_code == 422
        assert (await client.post(f"/api/orchestrate/task/{first['id']}/retry", json={"surprise": 1})).status_code == 422

        response = await client.post(f"/api/orchestrate/task/{first['id']}/retry")
        assert response.status_code == 202, response.text
        assert response.json()["round"] == 2
        second = await stack.wait_task(client, first["id"])
        running = await client.post(f"/api/orchestrate/task/{first['id']}/retry")
        requests = await stack.sim_requests(client, task_id=first["id"], role="expert")
    subtasks = by_id(second)
    assert second["status"] == "completed" and second["round"] == 2
    assert [s["status"] for s in second["subtasks"]] == ["completed"] * 3
    assert subtasks["fine"]["result"] == fine_result
    count = {sid: sum(r["headers"]["x-aether-subtask-id"] == sid for r in requests) for sid in subtasks}
    assert count == {"flaky": 3, "needs-flaky": 1, "fine": 1}, count
    assert "Missing parts" not in second["final_result"]
    assert running.status_code == 409 and "no failed or cancelled subtask" in running.json()["detail"]


async def test_a_subtask_that_fails_for_good_is_replaced_by_a_replan_once(control_stack):
    stack = control_stack
    plan = scripted(
        "Auto replan",
        [subtask("refused", "python-backend", sim="fail=400"), subtask("downstream", "fullstack", ["refused"])],
    )
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"], timeout=90)
    subtasks = by_id(task)
    assert task["status"] == "completed", task["logs"]
    assert subtasks["refused"]["status"] == "failed" and subtasks["refused"]["replaced_by"] == ["refused.1.fix"]
    fix = subtasks["refused.1.fix"]
    assert fix["status"] == "completed" and fix["depends_on"] == [] and fix["agent_type"] == "python-backend"
    assert subtasks["downstream"]["status"] == "completed" and subtasks["downstream"]["depends_on"] == ["refused.1.fix"]
    assert "Missing parts" not in task["final_result"]
    assert any("Jason is asked for a replacement plan" in line for line in task["logs"])
    assert task["plan"]["replans"][0]["replaced"] == "refused"


async def test_a_replan_can_be_asked_for_on_retry(control_stack):
    stack = control_stack
    plan = scripted(
        "Replan on retry\nSIM-REPLAN: " + '{"analysis": "split it", "subtasks": [{"id": "a", "description": "first half", "agent_type": "database-expert"}, {"id": "b", "description": "second half", "agent_type": "python-backend", "depends_on": ["a"]}]}',
        [subtask("flaky", "fullstack", sim="fail=503"), subtask("after", "fullstack", ["flaky"])],
    )
    async with stack.client() as client:
        first = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
        assert by_id(first)["flaky"]["status"] == "failed"
        response = await client.post(f"/api/orchestrate/task/{first['id']}/retry", json={"replan": True})
        assert response.status_code == 202, response.text
        second = await stack.wait_task(client, first["id"], timeout=90)
    subtasks = by_id(second)
    assert second["status"] == "completed", second["logs"]
    assert subtasks["flaky"]["replaced_by"] == ["flaky.1.a", "flaky.1.b"]
    assert subtasks["flaky.1.b"]["depends_on"] == ["flaky.1.a"]
    assert subtasks["after"]["depends_on"] == ["flaky.1.b"] and subtasks["after"]["status"] == "completed"


async def test_a_replacement_whose_ids_collide_with_the_plan_gets_free_ids_and_runs(control_stack):
    # Issue 19, finding 6: the simulator's replacement is `fix`, so its id would be
    # `refused.1.fix`, taken; the fallback `refused.1.1` is taken too. Both ids were used twice
    # before, the replacement never ran, and the task hung in `executing`.
    stack = control_stack
    plan = scripted(
        "Replan into taken ids",
        [
            subtask("refused", "python-backend", sim="fail=400"),
            subtask("refused.1.fix", "fullstack"),
            subtask("refused.1.1", "fullstack"),
            subtask("downstream", "fullstack", ["refused"]),
        ],
    )
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"], timeout=90)
        experts = await stack.sim_requests(client, task_id=task["id"], role="expert")
    subtasks = by_id(task)
    ids = [s["id"] for s in task["subtasks"]]
    assert len(ids) == len(set(ids)), ids
    assert task["status"] == "completed", task["logs"]
    assert subtasks["refused"]["replaced_by"] == ["refused.1.2"]
    replacement = subtasks["refused.1.2"]
    assert replacement["status"] == "completed" and replacement["description"].startswith("Replacement for refused")
    assert replacement["result"] and replacement["agent_type"] == "python-backend"
    assert subtasks["downstream"]["depends_on"] == ["refused.1.2"] and subtasks["downstream"]["status"] == "completed"
    assert [r["headers"]["x-aether-subtask-id"] for r in experts].count("refused.1.2") == 1
    assert "Missing parts" not in task["final_result"]


async def test_a_task_that_failed_in_planning_is_planned_again(control_stack):
    stack = control_stack
    async with stack.client() as client:
        first = await stack.wait_task(client, (await stack.submit(client, "Build a FastAPI app [[sim planner.fail=400 times=1]]"))["id"])
        assert first["status"] == "failed" and first["error"].startswith("planning failed")
        assert (await client.post(f"/api/orchestrate/task/{first['id']}/retry")).status_code == 202
        second = await stack.wait_task(client, first["id"])
    assert second["status"] == "completed" and second["round"] == 2


LIMITS_ENV = {
    # Long enough for the budget test's task on a loaded machine (a cold agent took 4 s there
    # beside a second test worker), short enough for the deadline test not to wait long.
    "AETHER_TASK_TIMEOUT_S": "8",
    "AETHER_POOL_OVERRIDES": "fullstack:min=1",
    # Jason's plan and the first expert's call fit (about 850 and 1,100 tokens), not the second's.
    "AETHER_TASK_TOKEN_BUDGET": "3000",
}


@pytest.fixture(scope="module")
def limits_stack():
    running = Stack(env=LIMITS_ENV).start()
    yield running
    running.stop()


async def test_a_task_that_outlives_its_deadline_fails_and_its_work_stops(limits_stack):
    stack = limits_stack
    plan = scripted("Too slow", [subtask("slow", "fullstack", sim="latency_ms=30000")])
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"], timeout=60)
        assert task["status"] == "failed" and "timed out" in task["error"] and "8s" in task["error"]
        assert by_id(task)["slow"]["status"] == "cancelled"

        async def call_aborted():
            return (await client.get(f"{stack.sim_url}/_sim/stats")).json()["in_flight"] == 0

        # The state says failed first; the cancel then reaches the agent (a broadcast), which
        # aborts its call: the simulator sees it go within seconds, not after its 30 s.
        await eventually(call_aborted, timeout=10)


async def test_the_token_budget_stops_a_task_politely(limits_stack):
    stack = limits_stack
    plan = scripted("Budget", [subtask(f"s{i}", "fullstack", [f"s{i - 1}"] if i else []) for i in range(6)])
    async with stack.client() as client:
        await stack.wait_idle_agent(client, "fullstack")  # the task's deadline is not for its start
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
    statuses = [s["status"] for s in task["subtasks"]]
    assert task["status"] == "completed", task["logs"]
    assert statuses[0] == "completed" and statuses[-1] == "cancelled"
    cancelled = [s for s in task["subtasks"] if s["status"] == "cancelled"]
    assert all("token budget of 3000 is spent" in s["error"] or "token budget of 3000 leaves" in s["error"] for s in cancelled)
    # At most one started: the one whose call the budget could not fit (it made no call).
    started = [s for s in cancelled if s["started_at"] is not None]
    assert len(started) <= 1 and all("leaves" in s["error"] and s["usage"]["calls"] == 0 for s in started)
    assert "Missing parts" in task["final_result"]
