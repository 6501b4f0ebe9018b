"""Issue 3: expert agents in their own processes (or containers), a warm pool per agent type that
scales with the queue, agents coming and going in GET /api/agents, deletion, crashes, adoption."""

import asyncio
import json
import os
import signal
import uuid

import nats
import pytest

from aether_contracts import subjects, topology
from aether_contracts.events import PlanReady, SubtaskFinished, TaskFinished
from tests.support.agents import agent_events, experts, pool, wait_for
from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

POOL_ENV = {
    "AETHER_POOL_MAX": "3",
    "AETHER_POOL_IDLE_TIMEOUT_S": "3",
    "AETHER_POOL_INTERVAL_S": "0.3",
    "AETHER_POOL_OVERRIDES": "devops-expert:min=1",
}


@pytest.fixture(scope="module")
def pool_stack():
    running = Stack(env=POOL_ENV).start()
    yield running
    running.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, OSError):
        return False


async def test_the_master_is_listed_and_cannot_be_deleted(pool_stack):
    async with pool_stack.client() as client:
        agents = await pool(client)
        assert agents[0]["id"] == "jason" and agents[0]["role"] == "master"
        assert agents[0]["deletable"] is False and agents[0]["backend"] == "builtin"
        response = await client.delete("/api/agents/jason")
        assert response.status_code == 409 and "master" in response.json()["detail"]
        response = await client.delete("/api/agents/no-such-agent")
        assert response.status_code == 404


async def test_subtasks_of_three_types_run_on_agents_of_those_types(pool_stack):
    plan = scripted(
        "Three types",
        [subtask("db", "database-expert"), subtask("api", "python-backend", ["db"]), subtask("ui", "react-frontend", ["db"])],
    )
    async with pool_stack.client() as client:
        task = await pool_stack.wait_task(client, (await pool_stack.submit(client, plan))["id"], timeout=120)
        assert task["status"] == "completed", task["logs"]
        agents = {a["id"]: a for a in await pool(client)}
    for s in task["subtasks"]:
        agent = agents[s["agent_id"]]
        assert agent["agent_type"] == s["agent_type"] and agent["backend"] == "process"
        assert agent["subtasks_done"] >= 1 and int(agent["runtime_id"]) > 0  # a pid (it may be idle-stopped already)
    # the first subtask found no agent of its type and said so
    assert any("waiting for a database-expert agent to start" in line for line in task["logs"])
    started = {e.agent_id for e in await agent_events(pool_stack.nats_url) if e.kind == "started"}
    assert {s["agent_id"] for s in task["subtasks"]} <= started


async def test_the_warm_minimum_is_kept(pool_stack):
    async with pool_stack.client() as client:
        warm = await wait_for(lambda: experts(client, "devops-expert"), what="a warm devops agent")
    assert len(warm) == 1 and warm[0]["status"] == "idle"


async def test_a_ready_plan_starts_the_agents_its_later_subtasks_need(pool_stack):
    """Issue 14: the pool knows the plan. The nine frontend subtasks wait on a slow root, so
    none of them is queued yet; their agents start anyway, as many as the plan's width needs
    (9 at 4 per agent: 3, the maximum here), and stay up (idle longer than the pool's idle
    timeout of 3 s) until the subtasks come."""
    plan = scripted(
        "Later types",
        [subtask("root", "python-backend", sim="latency_ms=12000")]
        + [subtask(f"ui{i}", "react-frontend", ["root"]) for i in range(9)],
    )
    async with pool_stack.client() as client:
        created = await pool_stack.submit(client, plan)

        async def root_running_and_three_ui_agents():
            task = (await client.get(f"/api/orchestrate/task/{created['id']}")).json()
            root = next(s for s in task["subtasks"] if s["id"] == "root") if task["subtasks"] else None
            if root is not None and root["status"] in ("completed", "failed"):
                raise AssertionError(f"the root finished before the agents were there: {task['logs']}")
            ui = await experts(client, "react-frontend")
            return len([a for a in ui if a["status"] in ("idle", "busy")]) >= 3

        await wait_for(root_running_and_three_ui_agents, timeout=60, what="three frontend agents while the root runs")
        task = await pool_stack.wait_task(client, created["id"], timeout=120)
    assert task["status"] == "completed", task["logs"]
    assert not [line for line in task["logs"] if "waiting for a react-frontend agent" in line], task["logs"]


async def test_a_publish_to_the_work_stream_is_answered_by_the_stream_alone(pool_stack):
    """The container-manager hears plan.ready, subtask.finished and task.finished on core NATS.
    A JetStream publish is a request whose first reply nats-py takes for the stream's ack: a
    listener that answered too (FastStream does unless told not to) made an empty "ack" whenever
    it was first, and the publish was repeated (two publish spans in a trace, CI of stop 24). Each
    publish here (of a task nobody has: the scheduler drops it) gets one reply, the stream's."""
    task_id = f"nobody-{uuid.uuid4()}"
    events = {
        subjects.PLAN_READY: PlanReady(task_id=task_id),
        subjects.SUBTASK_FINISHED: SubtaskFinished(task_id=task_id, subtask_id="s", outcome="completed"),
        subjects.TASK_FINISHED: TaskFinished(task_id=task_id, status="completed"),
    }
    nc = await nats.connect(pool_stack.nats_url)
    try:
        replies: dict[str, list] = {subject: [] for subject in events}
        for subject, event in events.items():
            inbox = nc.new_inbox()
            async def reply(msg, subject=subject):
                replies[subject].append(msg)

            sub = await nc.subscribe(inbox, cb=reply)
            for _ in range(5):
                await nc.publish(subject, event.model_dump_json().encode(), reply=inbox, headers={"Nats-Msg-Id": str(uuid.uuid4())})
            await nc.flush()
            await asyncio.sleep(1.0)  # what would answer has answered by now (a hop is ~1 ms)
            await sub.unsubscribe()
    finally:
        await nc.close()
    for subject, got in replies.items():
        assert len(got) == 5, (subject, [(m.headers, m.data) for m in got])
        for msg in got:
            ack = json.loads(msg.data)
            assert ack["stream"] == topology.STREAM and ack["seq"] > 0, (subject, ack)


async def test_a_backlog_scales_its_type_to_the_maximum_and_idle_agents_go_away(pool_stack):
    plan = scripted("Twenty", [subtask(f"t{i}", "testing-expert", sim="latency_ms=1500") for i in range(20)])
    async with pool_stack.client() as client:
        created = await pool_stack.submit(client, plan)
        most = 0

        async def at_maximum():
            nonlocal most
            count = len(await experts(client, "testing-expert"))
            most = max(most, count)
            return count == 3

        await wait_for(at_maximum, timeout=60, what="three testing agents")
        task = await pool_stack.wait_task(client, created["id"], timeout=120)
        assert task["status"] == "completed"
        assert len({s["agent_id"] for s in task["subtasks"]}) == 3
        assert all(s["attempts"] == 1 for s in task["subtasks"])

        async def scaled_down():
            nonlocal most
            count = len(await experts(client, "testing-expert"))
            most = max(most, count)
            return count == 0

        await wait_for(scaled_down, timeout=60, what="idle agents removed")
    assert most == 3, "the pool went past its maximum"
    stopped = [e for e in await agent_events(pool_stack.nats_url) if e.kind == "stopped" and e.agent_type == "testing-expert"]
    assert len(stopped) == 3 and all("idle" in e.reason for e in stopped)


async def busy_agent(client, task_id: str) -> dict:
    async def find():
        for agent in await experts(client):
            if agent["current_task"] == task_id and agent["status"] == "busy":
                return agent
        return None

    return await wait_for(find, timeout=60, interval=0.1, what="an agent busy with the task")


async def test_deleting_a_busy_agent_hands_its_subtask_to_another_agent(pool_stack):
    plan = scripted("Delete me", [subtask("long", "fullstack", sim="latency_ms=2500")])
    async with pool_stack.client() as client:
        created = await pool_stack.submit(client, plan)
        victim = await busy_agent(client, created["id"])
        response = await client.delete(f"/api/agents/{victim['id']}")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "stopping"
        task = await pool_stack.wait_task(client, created["id"], timeout=120)
        again = await client.delete(f"/api/agents/{victim['id']}")
    assert task["status"] == "completed", task["logs"]
    long = task["subtasks"][0]
    assert long["agent_id"] != victim["id"] and long["attempts"] == 2, task["logs"]
    assert sum("completed by" in line for line in task["logs"]) == 1
    assert again.status_code in (202, 404)  # stopped (or already forgotten): either way not running
    await wait_for(lambda: asyncio.to_thread(lambda: not alive(int(victim["runtime_id"]))), what="the agent process gone")
    events = [e for e in await agent_events(pool_stack.nats_url) if e.agent_id == victim["id"]]
    assert [e.kind for e in events][-1] == "stopped"


async def test_a_killed_agent_is_replaced_and_its_subtask_redelivered(pool_stack):
    plan = scripted("Kill me", [subtask("long", "python-backend", sim="latency_ms=2500")])
    async with pool_stack.client() as client:
        created = await pool_stack.submit(client, plan)
        victim = await busy_agent(client, created["id"])
        os.kill(int(victim["runtime_id"]), signal.SIGKILL)
        task = await pool_stack.wait_task(client, created["id"], timeout=150)
    assert task["status"] == "completed", task["logs"]
    assert task["subtasks"][0]["agent_id"] != victim["id"] and task["subtasks"][0]["attempts"] == 2
    failed = [e for e in await agent_events(pool_stack.nats_url) if e.agent_id == victim["id"] and e.kind == "failed"]
    assert failed and "exited unexpectedly" in failed[0].reason


async def test_a_container_manager_restart_adopts_its_agents_and_leaves_no_orphan():
    stack = Stack(env={**POOL_ENV, "AETHER_POOL_OVERRIDES": "devops-expert:min=2"}).start()
    try:
        async with stack.client() as client:
            warm = await wait_for(
                lambda: _at_least(experts(client, "devops-expert"), 2), what="two warm devops agents"
            )
            pids = {int(a["runtime_id"]) for a in warm}
            old = stack.kill("container-manager")
            await stack.wait_restarted("container-manager", old)
            await asyncio.sleep(3)  # several pool rounds after the restart
            after = await experts(client, "devops-expert")
            assert {int(a["runtime_id"]) for a in after} == pids, "adopted, not replaced"
            assert all(alive(p) for p in pids)
    finally:
        stack.stop()
    assert not [p for p in pids if alive(p)], "an agent outlived the stack"


async def _at_least(coro, n):
    found = await coro
    return found if len(found) >= n else None
