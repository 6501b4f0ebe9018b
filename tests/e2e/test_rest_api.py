"""The seed's REST API, kept compatible, and bad input answered with a clear 4xx."""

import asyncio

import pytest

from tests.support.plans import scripted, subtask

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "description: Field required"),
        ({"description": ""}, "description must not be empty"),
        ({"description": "   \n "}, "description must not be empty"),
        ({"description": 42}, "description: Input should be a valid string"),
        ({"description": ["a"]}, "description: Input should be a valid string"),
        ({"description": None}, "description: Input should be a valid string"),
        ({"description": "x" * 20_001}, "description has 20001 characters; at most 20000 are allowed"),
        ({"description": "ok", "master_deployment_id": "nobody"}, "unknown master_deployment_id 'nobody'; known: jason"),
        ({"description": "ok", "master_deployment_id": 7}, "master_deployment_id: Input should be a valid string"),
        ({"description": "ok", "surprise": True}, "surprise: Extra inputs are not permitted"),
    ],
)
async def test_bad_submissions_get_a_4xx_with_a_message(stack, body, message):
    async with stack.client() as client:
        response = await client.post("/api/orchestrate/task", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


async def test_malformed_json_and_oversized_bodies_are_refused(stack):
    async with stack.client() as client:
        response = await client.post("/api/orchestrate/task", content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 422 and "JSON" in response.json()["detail"]
        response = await client.post("/api/orchestrate/task", content=b"x" * 1_000_001, headers={"content-type": "application/json"})
        assert response.status_code == 413


async def test_unknown_tasks_are_404(stack):
    async with stack.client() as client:
        for task_id in ("00000000-0000-7000-8000-000000000000", "no.such.task", "%2e%2e", "a" * 300):
            response = await client.get(f"/api/orchestrate/task/{task_id}")
            assert response.status_code == 404, task_id
            assert "no task with id" in response.json()["detail"]


async def test_submit_answers_202_with_the_seed_status_body(stack):
    async with stack.client() as client:
        response = await client.post(
            "/api/orchestrate/task",
            json={"description": "Build a REST API for user management", "master_deployment_id": "jason"},
        )
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/api/orchestrate/task/{body['id']}"
    for field in ("id", "description", "status", "subtasks", "plan", "final_result", "logs", "created_at", "completed_at"):
        assert field in body
    assert body["master_deployment_id"] == "jason"
    assert body["logs"][0].endswith("Task created for master jason")


async def test_an_idempotency_key_returns_the_same_task(stack):
    async with stack.client() as client:
        headers = {"Idempotency-Key": "retry-me-123"}
        first = await client.post("/api/orchestrate/task", json={"description": "Once only"}, headers=headers)
        second = await client.post("/api/orchestrate/task", json={"description": "Once only"}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]


async def test_tasks_are_listed_newest_first_and_paginated(stack):
    async with stack.client() as client:
        ids = []
        for n in range(3):
            ids.append((await stack.submit(client, scripted(f"List {n}", [subtask("a", "fullstack")])))["id"])
            await asyncio.sleep(0.005)
        page = await client.get("/api/orchestrate/tasks", params={"limit": 2})
        assert page.status_code == 200
        assert [t["id"] for t in page.json()] == ids[::-1][:2]
        total = int(page.headers["x-total-count"])
        assert total >= 3
        second = await client.get("/api/orchestrate/tasks", params={"limit": 1, "offset": 2})
        assert [t["id"] for t in second.json()] == [ids[0]]
        summary = page.json()[0]
        assert {"id", "status", "progress", "created_at", "usage"} <= summary.keys()
        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "nonsense"}):
            assert (await client.get("/api/orchestrate/tasks", params=bad)).status_code == 422
        await stack.wait_task(client, ids[-1])
        done = await client.get("/api/orchestrate/tasks", params={"status": "completed", "limit": 500})
        assert all(t["status"] == "completed" for t in done.json())
        assert ids[-1] in [t["id"] for t in done.json()]


async def test_the_six_seed_templates_are_listed(stack):
    async with stack.client() as client:
        response = await client.get("/api/orchestrate/agents")
    assert response.status_code == 200
    assert [t["type"] for t in response.json()] == [
        "python-backend", "react-frontend", "database-expert", "devops-expert", "fullstack", "testing-expert",
    ]
    assert {"name", "description", "tags"} <= response.json()[0].keys()


async def test_health_names_each_service(stack):
    async with stack.client() as client:
        response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["nats"] and body["kv"]
    for name in ("planner", "executor", "synthesizer", "gateway"):
        assert body["services"][name]["ok"], name
        assert body["services"][name]["instances"][0]["pid"] > 0


async def test_openapi_documents_the_api(stack):
    async with stack.client() as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    for path in ("/api/orchestrate/task", "/api/orchestrate/task/{task_id}", "/api/orchestrate/tasks", "/api/orchestrate/agents", "/api/health"):
        assert path in spec["paths"]
