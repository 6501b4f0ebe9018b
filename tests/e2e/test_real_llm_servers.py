"""Issue 12: Aether against servers that behave as real ones do (the simulator configured as a
local llama.cpp that serves one request at a time and takes `json_object` but not `json_schema`,
with a weak model's answers scripted): plans by structured output, repair and fallback, bounded
and continued replies, every attempt's tokens counted, the endpoint limit, failures in the logs."""

import asyncio

import pytest

from tests.support.plans import scripted, subtask
from tests.support.services import eventually
from tests.support.simulator import SimulatorServer
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def local_server():
    """Like llama.cpp serving a small model: json_object only, one request at a time, paced."""
    server = SimulatorServer(structured="json", max_concurrency=1, tokens_per_s=2000).start()
    yield server
    server.stop()


def llm_stack(server: SimulatorServer, **env: str) -> Stack:
    return Stack(
        env={
            "OPENAI_API_KEY": "a-local-server-needs-none",
            "OPENAI_BASE_URL": server.base_url,
            "AETHER_LLM_MAX_CONCURRENCY": "1",
            "AETHER_LLM_BACKOFF_BASE_S": "0.05",
            **env,
        }
    )


@pytest.fixture(scope="module")
def stack(local_server):
    running = llm_stack(local_server, AETHER_EXPERT_MAX_TOKENS="600").start()
    yield running
    running.stop()


async def test_a_plan_that_is_no_plan_is_repaired_with_the_schema_and_every_error(stack, local_server):
    async with stack.client() as client:
        task = await stack.submit(client, "Build a FastAPI service with a postgres schema [[sim planner.shape=1]]")
        done = await stack.wait_task(client, task["id"], timeout=120)
    assert done["status"] == "completed", done["logs"]
    assert any("Jason's first plan was invalid" in line and "'subtasks' list" in line for line in done["logs"])
    asked = local_server.requests(task_id=task["id"], role="planner")
    formats = [(r["status"], (r["body"].get("response_format") or {}).get("type")) for r in asked]
    # json_schema refused once per process (then remembered), json_object taken: valid JSON, no plan.
    assert formats[-2:] == [(200, "json_object"), (200, "json_object")]
    repair = asked[-1]["messages"][-1]["content"]
    assert "JSON Schema" in repair and '"agent_type"' in repair and "'subtasks' list" in repair
    assert done["usage"]["calls"] >= 2 + len(done["subtasks"]) + 1


async def test_when_the_repair_fails_too_the_plan_comes_from_the_keywords_and_says_so(stack, local_server):
    async with stack.client() as client:
        task = await stack.submit(client, "Build a React frontend for a FastAPI backend [[sim planner.shape=always]]")
        done = await stack.wait_task(client, task["id"], timeout=120)
    assert done["status"] == "completed", done["logs"]
    assert "fallback plan from the agent templates' keywords" in done["plan"]["analysis"]
    assert any("planned from the agent templates' keywords instead" in line for line in done["logs"])
    assert {s["agent_type"] for s in done["subtasks"]} == {"python-backend", "react-frontend"}
    planning = [r for r in local_server.requests(task_id=task["id"], role="planner") if r["status"] == 200]
    assert len(planning) == 2
    # Both failed planning calls are in the task's usage, beside the experts' and the synthesis'.
    assert done["usage"]["calls"] >= 2 + 2 + 1 and done["usage"]["total_tokens"] > 0
    assert f"task {task['id']}: Jason's plan was invalid" in stack.log_tail(200_000)


async def test_raw_newlines_in_a_plans_strings_are_read_not_refused(stack):
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Newlines", [subtask("a", "fullstack")]) + " [[sim planner.newlines=1]]")
        done = await stack.wait_task(client, task["id"], timeout=120)
    assert done["status"] == "completed", done["logs"]
    assert "raw newlines" in done["plan"]["analysis"]
    assert any("raw control characters" in line for line in done["logs"])


async def test_a_reply_cut_at_max_tokens_is_continued_and_one_still_cut_fails_visibly(stack, local_server):
    async with stack.client() as client:
        fits = await stack.submit(client, scripted("Long", [subtask("a", "fullstack", sim="long=900")]))
        never = await stack.submit(client, scripted("Endless", [subtask("b", "fullstack", sim="long=6000")]))
        fits, never = [await stack.wait_task(client, t["id"], timeout=180) for t in (fits, never)]
    assert fits["status"] == "completed", fits["logs"]
    assert any("reply cut off at the length limit (max_tokens=600); continuing (1/2)" in line for line in fits["logs"])
    assert all(r["body"]["max_tokens"] == 600 for r in local_server.requests(task_id=fits["id"], role="expert"))
    endless = next(s for s in never["subtasks"] if s["id"] == "b")  # (then replanned: retrying cannot fix it)
    assert endless["status"] == "failed" and "still cut off at the length limit" in endless["error"]
    assert endless["usage"]["calls"] == 3  # the call and its two continuations, counted though it failed


async def test_one_request_at_a_time_waits_in_aether_not_at_the_server(stack, local_server):
    parallel = [subtask(n, "fullstack", sim="latency_ms=300") for n in ("a", "b", "c", "d")]
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Four at once", parallel))
        done = await stack.wait_task(client, task["id"], timeout=120)
    assert done["status"] == "completed", done["logs"]
    assert local_server.stats()["max_in_flight"] == 1


async def test_a_cancelled_call_stops_the_server_and_its_tokens_are_counted(stack, local_server):
    async with stack.client() as client:
        # (The server takes its time before the first token: this stack cuts replies at 600.)
        task = await stack.submit(client, scripted("Cancelled", [subtask("a", "fullstack", sim="latency_ms=8000")]))

        async def generating():
            return any(r["status"] == 200 for r in local_server.requests(task_id=task["id"], role="expert")) or None

        await eventually(generating, timeout=60)
        await asyncio.sleep(0.5)
        assert (await client.post(f"/api/orchestrate/task/{task['id']}/cancel")).status_code == 200

        async def counted():
            body = (await client.get(f"/api/orchestrate/task/{task['id']}")).json()
            return body if body["subtasks"][0]["usage"]["estimated_tokens"] > 0 else None

        done = await eventually(counted, timeout=30)
    assert done["status"] == "cancelled"
    [expert] = local_server.requests(task_id=task["id"], role="expert")
    assert expert["status"] == 499  # the stream was closed: the server stopped generating
    assert done["usage"]["estimated_tokens"] >= done["subtasks"][0]["usage"]["estimated_tokens"] > 0


async def test_with_fallback_off_a_failed_planning_fails_the_task_and_keeps_its_tokens(local_server):
    stack = llm_stack(local_server, AETHER_PLAN_FALLBACK="fail").start()
    try:
        async with stack.client() as client:
            task = await stack.submit(client, "Build anything [[sim planner.shape=always]]")
            done = await stack.wait_task(client, task["id"], timeout=120)
    finally:
        stack.stop()
    assert done["status"] == "failed" and "planning failed" in done["error"]
    assert done["usage"]["calls"] >= 2 and done["usage"]["total_tokens"] > 0  # not "0 tokens, 0 calls"
    assert f"task {task['id']}: planning failed" in stack.log_tail(200_000)
