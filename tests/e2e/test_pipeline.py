"""The whole stack as `make up` runs it, driven over REST with the LLM simulator."""

import asyncio
from datetime import datetime

import pytest

from tests.support.plans import scripted, subtask

pytestmark = pytest.mark.e2e


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_diamond_completes_with_dependency_results_in_prompts_and_synthesis(stack):
    plan = scripted(
        "Diamond",
        [
            subtask("schema", "database-expert"),
            subtask("api", "python-backend", ["schema"]),
            subtask("ui", "react-frontend", ["schema"]),
            subtask("tests", "testing-expert", ["api", "ui"]),
        ],
    )
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        assert created["status"] in ("pending", "planning")
        task = await stack.wait_task(client, created["id"])
        assert task["status"] == "completed", task["logs"]
        assert [s["status"] for s in task["subtasks"]] == ["completed"] * 4
        by_id = {s["id"]: s for s in task["subtasks"]}
        assert "Simulated result" in by_id["api"]["result"]
        assert "Simulated synthesis" in task["final_result"]
        assert "Parts integrated: schema (database-expert), api (python-backend), ui (react-frontend), tests (testing-expert)" in task["final_result"]

        requests = await stack.sim_requests(client, task_id=created["id"])
        experts = {r["headers"]["x-aether-subtask-id"]: r for r in requests if r["role"] == "expert"}
        join_prompt = experts["tests"]["messages"][-1]["content"]
        assert "### Result of api (python-backend)" in join_prompt
        assert "### Result of ui (react-frontend)" in join_prompt
        assert by_id["api"]["result"].strip() in join_prompt
        assert "### Result of" not in experts["schema"]["messages"][-1]["content"]
        [synthesis] = [r for r in requests if r["role"] == "synthesizer"]
        for s in task["subtasks"]:
            assert s["result"].strip() in synthesis["messages"][-1]["content"]

        # dependents started only after their own dependencies completed
        assert when(by_id["api"]["started_at"]) >= when(by_id["schema"]["completed_at"])
        assert when(by_id["tests"]["started_at"]) >= max(when(by_id["api"]["completed_at"]), when(by_id["ui"]["completed_at"]))


async def test_every_llm_request_is_attributed_and_usage_adds_up(stack):
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Usage", [subtask("a", "fullstack"), subtask("b", "devops-expert", ["a"])]))
        task = await stack.wait_task(client, created["id"])
        requests = await stack.sim_requests(client, task_id=created["id"])
    assert sorted(r["role"] for r in requests) == ["expert", "expert", "planner", "synthesizer"]
    for r in requests:
        assert r["headers"]["x-aether-task-id"] == created["id"]
        if r["role"] == "expert":
            assert r["headers"]["x-aether-agent-type"] in ("fullstack", "devops-expert")
            assert r["headers"]["x-aether-subtask-id"] in ("a", "b")
        else:
            assert "x-aether-subtask-id" not in r["headers"]
    subtask_tokens = sum(s["usage"]["total_tokens"] for s in task["subtasks"])
    assert all(s["usage"]["total_tokens"] > 0 for s in task["subtasks"])
    assert task["usage"]["calls"] == 4
    assert task["usage"]["total_tokens"] > subtask_tokens > 0  # planner and synthesis add theirs


CHAIN_TYPES = ("database-expert", "python-backend", "testing-expert")


async def test_a_slow_subtask_does_not_delay_an_unrelated_chain(stack):
    plan = scripted(
        "Chain and slow sibling",
        [
            subtask("slow", "devops-expert", sim="latency_ms=8000"),
            subtask("c1", CHAIN_TYPES[0], sim="latency_ms=100"),
            subtask("c2", CHAIN_TYPES[1], ["c1"], sim="latency_ms=100"),
            subtask("c3", CHAIN_TYPES[2], ["c2"], sim="latency_ms=100"),
        ],
    )
    async with stack.client() as client:
        # The chain's agents first (they stay up 60 s idle): the race below is between the
        # chain's steps and the slow sibling, not between agents starting on a loaded machine
        # and the sibling (CI: three chain agents and the sibling's starting at once took longer
        # than its 8 s).
        warm = scripted("Warm the chain's agents", [subtask(f"w{i}", t) for i, t in enumerate(CHAIN_TYPES)])
        warmed = await stack.wait_task(client, (await stack.submit(client, warm))["id"])
        assert warmed["status"] == "completed", warmed["logs"]
        created = await stack.submit(client, plan)
        task = await stack.wait_task(client, created["id"])
    by_id = {s["id"]: s for s in task["subtasks"]}
    assert task["status"] == "completed"
    # Level by level, c2 could not start before `slow` (same level as c1) finished.
    assert when(by_id["c3"]["completed_at"]) < when(by_id["slow"]["completed_at"])
    assert when(by_id["c2"]["started_at"]) < when(by_id["slow"]["completed_at"])


async def test_fifty_tasks_of_eight_subtasks_at_once_all_complete_without_lost_updates(stack):
    def plan(n: int) -> str:
        return scripted(
            f"Bulk {n}",
            [
                subtask("s1", "database-expert"),
                subtask("s2", "python-backend", ["s1"]),
                subtask("s3", "python-backend", ["s1"]),
                subtask("s4", "react-frontend", ["s1"]),
                subtask("s5", "react-frontend", ["s2", "s4"]),
                subtask("s6", "devops-expert", ["s2"]),
                subtask("s7", "testing-expert", ["s3", "s5"]),
                subtask("s8", "fullstack", ["s6", "s7"]),
            ],
        )

    async with stack.client() as client:
        created = await asyncio.gather(*(stack.submit(client, plan(n)) for n in range(50)))
        tasks = await asyncio.gather(*(stack.wait_task(client, c["id"], timeout=180) for c in created))
    for task in tasks:
        assert task["status"] == "completed", task["logs"][-10:]
        assert [s["status"] for s in task["subtasks"]] == ["completed"] * 8
        assert all(s["result"] and s["attempts"] == 1 for s in task["subtasks"])
        completions = [line for line in task["logs"] if "completed by" in line]
        assert len(completions) == 8, "every completion recorded exactly once"
        assert task["progress"] == {"total": 8, "completed": 8, "failed": 0, "running": 0, "pending": 0}
        assert task["usage"]["calls"] == 10


# A 4xx from the LLM cannot be fixed by running the same call again: Jason is asked once for a
# replacement sub-plan. Here the replacement fails too, so the failure then takes its course.
STILL_BROKEN = 'SIM-REPLAN: {"subtasks": [{"id": "fix", "description": "still broken [[sim fail=400]]", "agent_type": "python-backend"}]}'


async def test_a_failed_subtask_blocks_only_its_dependents_and_the_synthesis_says_what_is_missing(stack):
    plan = scripted(
        "Partial failure\n" + STILL_BROKEN,
        [
            subtask("bad", "python-backend", sim="fail=400"),
            subtask("after-bad", "react-frontend", ["bad"]),
            subtask("good", "database-expert"),
            subtask("after-good", "testing-expert", ["good"]),
        ],
    )
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
    by_id = {s["id"]: s for s in task["subtasks"]}
    assert task["status"] == "completed"
    assert by_id["bad"]["status"] == "failed" and "HTTP 400" in by_id["bad"]["error"]
    assert by_id["bad"]["replaced_by"] == ["bad.1.fix"]
    assert by_id["bad.1.fix"]["status"] == "failed" and by_id["bad.1.fix"]["replans"] == 0, "replanned once only"
    assert by_id["after-bad"]["status"] == "failed" and by_id["after-bad"]["blocked_by"] == ["bad.1.fix"]
    assert by_id["after-bad"]["result"] is None and by_id["after-bad"]["started_at"] is None
    assert by_id["good"]["status"] == by_id["after-good"]["status"] == "completed"
    assert "Missing parts: bad.1.fix (python-backend), after-bad (react-frontend)" in task["final_result"]


async def test_when_every_subtask_fails_the_task_fails_with_a_reason(stack):
    plan = scripted("All fail\n" + STILL_BROKEN.replace("fail=400", "fail=403"), [subtask("only", "fullstack", sim="fail=403")])
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
    assert task["status"] == "failed"
    assert "no subtask succeeded" in task["error"] and "HTTP 403" in task["error"]


async def test_transient_llm_errors_are_retried_and_logged(stack):
    plan = scripted("Flaky", [subtask("flaky", "fullstack", sim="fail=503 times=2")])
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
    assert task["status"] == "completed"
    retries = [line for line in task["logs"] if "retry" in line and "HTTP 503" in line]
    assert len(retries) == 2 and all("[WARNING]" in line for line in retries)


async def test_a_malformed_plan_is_repaired_visibly(stack):
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, "Build a FastAPI endpoint [[sim malformed=1]]"))["id"])
    assert task["status"] == "completed"
    assert any("first plan was invalid" in line and "not valid JSON" in line for line in task["logs"])


async def test_a_plan_that_stays_invalid_is_replaced_by_a_keyword_plan_said_plainly(stack):
    # (With AETHER_PLAN_FALLBACK=fail the task fails readably instead: test_real_llm_servers.)
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, "Build a fastapi service [[sim malformed=always]]"))["id"])
    assert task["status"] == "completed", task["logs"]
    assert task["plan"]["analysis"].startswith("Jason could not make a usable plan (Jason's plan was invalid (")
    assert [s["agent_type"] for s in task["subtasks"]] == ["python-backend"]
    assert any("planned from the agent templates' keywords instead" in line for line in task["logs"])


async def test_keyword_planning_without_a_script(stack):
    # Three subtasks in a chain, each a real tool run (its checks run twice in a sandbox): ~5 s
    # each here alone, 15-29 s each in CI beside the image builds.
    async with stack.client() as client:
        task = await stack.wait_task(
            client,
            (await stack.submit(client, "Build a REST API for user management with CRUD endpoints, database models, and unit tests"))["id"],
            timeout=240,
        )
    assert task["status"] == "completed"
    assert [s["agent_type"] for s in task["subtasks"]] == ["database-expert", "python-backend", "testing-expert"]
    assert task["plan"]["subtasks"][1]["depends_on"] == ["subtask-1"]


async def test_when_the_synthesis_llm_fails_the_results_are_concatenated_visibly(stack):
    plan = scripted("No synthesis [[sim synthesizer.fail=400]]", [subtask("a", "fullstack"), subtask("b", "database-expert")])
    async with stack.client() as client:
        task = await stack.wait_task(client, (await stack.submit(client, plan))["id"])
    assert task["status"] == "completed"
    assert task["final_result"].startswith("_Jason could not synthesize these results")
    assert "## a (fullstack)" in task["final_result"] and "## b (database-expert)" in task["final_result"]
    assert any("[WARNING] Synthesis LLM call failed" in line for line in task["logs"])
