"""Issue 8, faults survived: real processes killed with SIGKILL at their worst moments while tasks
run, NATS stopped and restarted, the LLM down for a minute. `make chaos` runs this (CI too).

Every test writes its figures to artifacts/chaos-<test>.json: tasks run, processes killed, tasks
lost (must be 0), duplicate results (must be 0).
"""

import asyncio
import contextlib
import os
import signal
import time

import httpx
import pytest

from tests.support.agents import wait_for
from tests.support.chaos import (
    diamond,
    duplicates,
    statuses,
    submit_until_accepted,
    wait_all,
    write_figures,
)
from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

pytestmark = pytest.mark.chaos


async def test_every_service_killed_at_its_worst_moment_while_twenty_tasks_run():
    stack = Stack(
        env={
            "AETHER_SIM_LATENCY_MS": "1500",
            "AETHER_SIM_LATENCY_DIST": "lognormal",
            "AETHER_POOL_MAX": "3",
            "AETHER_POOL_IDLE_TIMEOUT_S": "5",
            "AETHER_MAX_ACTIVE_TASKS": "1000",
        }
    ).start()
    kills: dict[str, str] = {}

    def kill(name: str, moment: str, pid: int | None = None) -> None:
        if pid is None:
            stack.kill(name)
        else:
            os.kill(pid, signal.SIGKILL)
        kills[name] = moment

    async def kill_when(name: str, moment: str, condition, timeout: float = 120) -> None:
        async def check():
            try:
                return await condition()
            except httpx.HTTPError:  # the gateway may be down: it was killed too
                return None

        try:
            found = await wait_for(check, timeout=timeout, interval=0.1, what=moment)
        except TimeoutError:
            kills[name] = f"MISSED: {moment}"
            return
        kill(name, moment, found if isinstance(found, int) and not isinstance(found, bool) else None)

    async def planning():
        return (await statuses(stack))["planning"] > 0

    async def busy_agent():
        async with stack.client() as client:
            for agent in (await client.get("/api/agents")).json():
                if agent["role"] == "expert" and agent["status"] == "busy" and agent["alive"]:
                    return int(agent["runtime_id"])
        return None

    async def executing():
        return (await statuses(stack))["executing"] > 0

    async def scaling():
        async with stack.client() as client:
            return any(a["status"] == "starting" for a in (await client.get("/api/agents")).json())

    async def synthesizing():
        return (await statuses(stack))["synthesizing"] > 0

    try:
        submissions = [asyncio.create_task(submit_until_accepted(stack, diamond(n), f"chaos-{n}")) for n in range(20)]
        await asyncio.sleep(0.05)
        kill("gateway", "while the first submissions were being accepted")
        watchers = [
            asyncio.create_task(kill_when("planner", "mid-plan", planning)),
            asyncio.create_task(kill_when("container-manager", "mid-scale (an agent starting)", scaling)),
            asyncio.create_task(kill_when("agent", "mid-LLM call", busy_agent)),
        ]
        created = await asyncio.gather(*submissions)
        await asyncio.gather(*watchers)
        await kill_when("executor", "while subtasks execute", executing)
        await kill_when("synthesizer", "mid-synthesis", synthesizing)
        tasks = await wait_all(stack, [c["id"] for c in created], timeout=600)
        async with stack.client() as client:
            listed = (await client.get("/api/orchestrate/tasks", params={"limit": 500})).json()
    finally:
        stack.stop()

    lost = [t["id"] for t in tasks if t["status"] != "completed"]
    dupes = sum(duplicates(t) for t in tasks)
    figures = {
        "tasks_run": len(tasks),
        "tasks_listed": len(listed),
        "processes_killed": len([k for k in kills.values() if not k.startswith("MISSED")]),
        "kills": kills,
        "tasks_lost": len(lost),
        "duplicate_results": dupes,
        "subtask_attempts_above_one": sum(s["attempts"] > 1 for t in tasks for s in t.get("subtasks", [])),
    }
    write_figures("kills", figures)
    assert not lost, lost
    assert dupes == 0
    assert len(listed) == 20, "a resubmitted task was created twice"
    assert not [k for k in kills.values() if k.startswith("MISSED")], kills


async def test_nats_stopped_and_restarted_mid_run():
    stack = Stack(env={"AETHER_SIM_LATENCY_MS": "800", "AETHER_MAX_ACTIVE_TASKS": "1000"}).start()
    try:
        async with stack.client() as client:
            created = [await stack.submit(client, diamond(n)) for n in range(10)]
        await wait_for(lambda: _executing(stack), timeout=120, what="tasks executing")
        old = stack.pid("nats")
        os.kill(old, signal.SIGTERM)  # a clean stop; the supervisor starts it again on its files
        await stack.wait_restarted("nats", old)
        tasks = await wait_all(stack, [c["id"] for c in created], timeout=300)
    finally:
        stack.stop()
    lost = [t["id"] for t in tasks if t["status"] != "completed"]
    write_figures("nats-restart", {"tasks_run": len(tasks), "tasks_lost": len(lost), "duplicate_results": sum(duplicates(t) for t in tasks)})
    assert not lost
    assert sum(duplicates(t) for t in tasks) == 0


async def _executing(stack: Stack) -> bool:
    return (await statuses(stack))["executing"] > 0


async def test_the_llm_down_for_a_minute_and_tasks_wait_then_complete():
    stack = Stack(env={"AETHER_SIM_LATENCY_MS": "200", "AETHER_LLM_BACKOFF_MAX_S": "10"}).start()
    try:
        async with stack.client() as client:
            await client.post(f"{stack.sim_url}/_sim/outage", params={"seconds": "60"})
            began = time.monotonic()
            created = [await stack.submit(client, diamond(n)) for n in range(5)]
        tasks = await wait_all(stack, [c["id"] for c in created], timeout=400)
        took = time.monotonic() - began
    finally:
        stack.stop()
    retried = sum(sum("retry" in line and "HTTP 503" in line for line in t["logs"]) for t in tasks)
    write_figures("llm-outage", {"tasks_run": len(tasks), "tasks_lost": sum(t["status"] != "completed" for t in tasks), "retries_logged": retried, "seconds_to_finish": round(took)})
    assert all(t["status"] == "completed" for t in tasks), [t["status"] for t in tasks]
    assert took >= 60 and retried > 0


async def test_an_llm_that_never_returns_fails_tasks_with_a_clear_reason():
    stack = Stack(env={"AETHER_LLM_RETRY_BUDGET_S": "6", "AETHER_LLM_BACKOFF_BASE_S": "0.5", "AETHER_LLM_BACKOFF_MAX_S": "2"}).start()
    try:
        async with stack.client() as client:
            await client.post(f"{stack.sim_url}/_sim/outage", params={"seconds": "100000"})
            created = [await stack.submit(client, diamond(n)) for n in range(3)]
        tasks = await wait_all(stack, [c["id"] for c in created], timeout=120)
    finally:
        stack.stop()
    for task in tasks:
        assert task["status"] == "failed", task["status"]
        assert task["error"].startswith("planning failed: gave up after") and "HTTP 503" in task["error"]


async def test_every_process_killed_while_a_plan_awaits_approval_and_a_question_its_answer():
    """Issue 15: both waits survive `kill -9` of NATS, every service and every agent; after the
    restart the same approval and the same answer work, once."""
    stack = Stack(env={"AETHER_POOL_OVERRIDES": "python-backend:min=1", "AETHER_SANDBOX_TIMEOUT_S": "20"}).start()
    ask = {**subtask("ask", "python-backend", sim="ask=1"), "verify": ["python3 -m pytest -q"]}
    try:
        async with stack.client() as client:
            approval = await stack.submit(client, diamond(0), require_plan_approval=True)
            question = await stack.submit(client, scripted("Chaos question", [ask, subtask("after", "fullstack", ["ask"]), subtask("free", "fullstack")]))
            await stack.wait_task(client, approval["id"], until={"awaiting_approval"}, timeout=120)

            async def asked():
                body = (await client.get(f"/api/orchestrate/task/{question['id']}")).json()
                return {s["id"]: s["status"] for s in body["subtasks"]}.get("ask") == "awaiting_input"

            await wait_for(asked, timeout=180, what="the question asked")
            agents = [int(a["runtime_id"]) for a in (await client.get("/api/agents")).json() if a["role"] == "expert" and a["alive"]]
        killed = {}
        for name in ("nats", "gateway", "planner", "executor", "synthesizer", "container-manager"):
            killed[name] = stack.kill(name)
        for pid in agents:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for name, pid in killed.items():
            await stack.wait_restarted(name, pid, timeout=60)
        await wait_for(lambda: _healthy(stack), timeout=120, what="the stack healthy again")
        async with stack.client() as client:
            waiting = [(await client.get(f"/api/orchestrate/task/{t['id']}")).json() for t in (approval, question)]
            assert waiting[0]["status"] == "awaiting_approval", waiting[0]["logs"]
            assert {s["id"]: s["status"] for s in waiting[1]["subtasks"]}["ask"] == "awaiting_input"
            approved = await client.post(f"/api/orchestrate/task/{approval['id']}/approve")
            answered = await client.post(f"/api/orchestrate/task/{question['id']}/subtasks/ask/answer", json={"answer": "SQLite"})
            again = [await client.post(f"/api/orchestrate/task/{approval['id']}/approve"),
                     await client.post(f"/api/orchestrate/task/{question['id']}/subtasks/ask/answer", json={"answer": "SQLite"})]
        tasks = await wait_all(stack, [approval["id"], question["id"]], timeout=300)
        async with stack.client() as client:
            requests = await stack.sim_requests(client, task_id=question["id"], role="expert")
    finally:
        stack.stop()
    resumed = [r for r in requests if r["subtask_id"] == "ask" and r["messages"][-1]["role"] == "tool" and "SQLite" in r["messages"][-1]["content"]]
    write_figures("waits", {
        "processes_killed": len(killed) + len(agents), "tasks_lost": sum(t["status"] != "completed" for t in tasks),
        "duplicate_results": sum(duplicates(t) for t in tasks), "resumed_from_the_answer": len(resumed),
    })
    assert approved.status_code == 200 and answered.status_code == 200, (approved.text, answered.text)
    assert [r.status_code for r in again] == [409, 409]
    assert [t["status"] for t in tasks] == ["completed", "completed"], [t["logs"][-10:] for t in tasks]
    assert sum(duplicates(t) for t in tasks) == 0
    assert len(resumed) == 1, "the answer resumed the expert once"
    assert {s["id"]: s["answer"] for s in tasks[1]["subtasks"]}["ask"] == "SQLite"
    started = [line.split(" started on ")[1].split()[0] for line in tasks[1]["logs"] if "Subtask ask started on " in line]
    resumed_on = [line.split(" resumed on ")[1].split()[0] for line in tasks[1]["logs"] if "Subtask ask resumed on " in line]
    assert len(resumed_on) == 1 and resumed_on[0] not in started, "an agent that was not the one that asked went on"


async def _healthy(stack: Stack) -> bool:
    try:
        async with stack.client() as client:
            return (await client.get("/api/health")).status_code == 200
    except httpx.HTTPError:
        return False
