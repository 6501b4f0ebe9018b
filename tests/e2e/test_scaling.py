"""Scaling one service with real processes, as `AETHER_AGENT_BACKEND=none SCALE=executor=3 make
up` does: three executor replicas (each a scheduler and a worker of every type, no
container-manager) share one backlog (one durable consumer per agent type), each handles part of
it, and no subtask runs twice."""

from collections import Counter

import pytest

from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

REPLICAS = ("executor-1", "executor-2", "executor-3")


async def test_three_executors_share_one_backlog_and_run_no_subtask_twice():
    stack = Stack(scale="executor=3", env={"AETHER_AGENT_BACKEND": "none"}).start()
    try:
        async with stack.client() as client:
            # One agent type, so one consumer and one backlog; every subtask takes a while, so
            # more of them wait than one replica runs at once (AETHER_WORKER_CONCURRENCY).
            plans = [
                scripted(
                    f"Backlog {n}",
                    [subtask(f"part{i}", "python-backend", sim="latency_ms=250") for i in range(8)],
                )
                for n in range(4)
            ]
            created = [await stack.submit(client, plan) for plan in plans]
            tasks = [await stack.wait_task(client, c["id"], timeout=120) for c in created]
            expert_calls: Counter = Counter()
            for task in tasks:
                for request in await stack.sim_requests(client, task_id=task["id"], role="expert"):
                    expert_calls[request["task_id"], request["subtask_id"]] += 1
    finally:
        log_tail = stack.log_tail(8000)
        stack.stop()

    # What a failure needs to be explained: each rerun subtask's own log lines and the services'.
    reruns = [
        (t["id"], s["id"], s["attempts"], [line for line in t["logs"] if f"Subtask {s['id']} " in line])
        for t in tasks
        for s in t["subtasks"]
        if s["attempts"] != 1
    ]
    explain = f"reruns: {reruns}\n--- stack log ---\n{log_tail}"

    subtasks = [(t["id"], s) for t in tasks for s in t["subtasks"]]
    assert all(t["status"] == "completed" for t in tasks), [t["logs"][-5:] for t in tasks]
    assert len(subtasks) == 32
    handled = Counter(s["agent_id"] for _, s in subtasks)
    assert set(handled) == set(REPLICAS), handled
    assert all(s["status"] == "completed" and s["attempts"] == 1 for _, s in subtasks), explain
    # The LLM saw each subtask exactly once: nothing was executed by two replicas.
    assert sorted(expert_calls) == sorted((task_id, s["id"]) for task_id, s in subtasks)
    assert set(expert_calls.values()) == {1}, explain
