"""What the chaos tests share (tests/chaos): the tasks they run, a careful client, the figures.

The helpers take any stack with `client()` (the harness's `Stack`, tests/support/cluster.py's
`PartitionedStack`)."""

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.plans import scripted, subtask

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def diamond(n: int, latency: str = "") -> str:
    sim = latency
    return scripted(
        f"Chaos task {n}",
        [
            subtask("schema", "database-expert", sim=sim),
            subtask("api", "python-backend", ["schema"], sim=sim),
            subtask("ui", "react-frontend", ["schema"], sim=sim),
            subtask("tests", "testing-expert", ["api", "ui"], sim=sim),
        ],
    )


def duplicates(task: dict) -> int:
    """Subtask results recorded more than once (each completion is one event in the log)."""
    completions = Counter(
        line.split("Subtask ", 1)[1].split(" ", 1)[0] for line in task["logs"] if " completed by " in line
    )
    return sum(count - 1 for count in completions.values() if count > 1)


def write_figures(name: str, figures: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"chaos-{name}.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


async def submit_until_accepted(stack, description: str, key: str, answers: Counter | None = None) -> dict:
    """A careful client: resubmit with the same Idempotency-Key until the gateway answers.
    `answers` counts the gateway's status codes."""
    while True:
        try:
            async with stack.client() as client:
                response = await client.post(
                    "/api/orchestrate/task", json={"description": description}, headers={"Idempotency-Key": key}
                )
            if answers is not None:
                answers[response.status_code] += 1
            if response.status_code == 202:
                return response.json()
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)


async def wait_all(stack, ids: list[str], timeout: float, answers: Counter | None = None) -> list[dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while len(done) < len(ids) and time.monotonic() < deadline:
        try:
            async with stack.client() as client:
                for task_id in ids:
                    if task_id in done:
                        continue
                    response = await client.get(f"/api/orchestrate/task/{task_id}")
                    if answers is not None:
                        answers[response.status_code] += 1
                    if response.status_code == 200 and response.json()["status"] in ("completed", "failed", "cancelled"):
                        done[task_id] = response.json()
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)
    return [done.get(i, {"id": i, "status": "lost", "logs": []}) for i in ids]


async def statuses(stack) -> Counter:
    async with stack.client() as client:
        tasks = (await client.get("/api/orchestrate/tasks", params={"limit": 500})).json()
    return Counter(t["status"] for t in tasks)
