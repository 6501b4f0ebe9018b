"""Issue 19, an adversarial review's findings on the gateway, each tried as the attacker did:
every route needs a key (walked from the app's own route table), another tenant's task is a 404
everywhere, no task id or key reaches /metrics or a URL that is logged, the per-tenant limit
holds under concurrency and retries, WebSocket clients cannot make the gateway read large frames,
and the docs come from this origin with a content security policy."""

import asyncio
import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aether_gateway.auth import OPEN_PATHS
from aether_gateway.main import create_app
from aether_gateway.settings import GatewaySettings
from tests.support.plans import scripted, subtask
from tests.support.services import eventually
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

ALICE, BOB, OPS = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef", "ops-key-0123456789abcdef"
CAROL, DAVE = "carol-key-0123456789abcdef", "dave-key-0123456789abcdef"
LIMIT = 3


@pytest.fixture(scope="module")
def stack():
    running = Stack(
        env={
            "AETHER_API_KEYS": f"alice:{ALICE},bob:{BOB},ops:{OPS}:admin,carol:{CAROL},dave:{DAVE}",
            "AETHER_MAX_ACTIVE_TASKS": str(LIMIT),
        }
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
async def alices_task(stack):
    """A completed task of Alice's with files and a repository."""
    async with stack.client(key=ALICE) as alice:
        plan = [subtask("a", "python-backend", sim="path=app/main.py"), subtask("b", "testing-expert", ["a"])]
        task = await stack.wait_task(alice, (await stack.submit(alice, scripted("Alice's code", plan)))["id"])
        files = (await alice.get(f"/api/orchestrate/task/{task['id']}/files")).json()
    assert task["status"] == "completed", task["logs"]
    return task, files


def routes() -> list[tuple[str, str, str]]:
    """(kind, method, path) of every route the gateway serves, from its own route table."""
    app = create_app(GatewaySettings(api_keys=f"x:{ALICE}"))
    found = []
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if isinstance(original, APIWebSocketRoute):
            found.append(("ws", "WS", route.path))
        elif isinstance(original, APIRoute | Route):  # Route: /openapi.json, outside FastAPI's dependencies
            found += [("http", m, route.path) for m in sorted(route.methods) if m != "HEAD"]
        else:
            raise AssertionError(f"a route of a kind this walk does not know: {original!r}")
    return found


def concrete(path: str, task_id: str, file_path: str) -> str:
    return (
        path.replace("{task_id}", task_id)
        .replace("{path:path}", file_path)
        .replace("{path}", file_path)
        .replace("{subtask_id}", "a")
        .replace("{agent_id}", "jason")
        .replace("{name}", "init.js")
    )


async def test_the_route_table_is_walked_whole():
    table = routes()
    paths = {p for _, _, p in table}
    # The walk must see what it claims to cover, the workspace and the streams included.
    for expected in (
        "/api/orchestrate/task",
        "/api/orchestrate/task/{task_id}/files/{path:path}",
        "/api/orchestrate/task/{task_id}/repository.bundle",
        "/api/orchestrate/task/{task_id}/stream",
        "/api/orchestrate/tasks/stream",
        "/api/agents/{agent_id}",
    ):
        assert expected in paths, sorted(paths)
    assert {k for k, _, _ in table} == {"http", "ws"}
    assert OPEN_PATHS <= paths, "an open path that is no route: the allow-list is stale"


async def test_every_route_needs_a_key_and_another_tenants_task_is_a_404_everywhere(stack, alices_task):
    task, files = alices_task
    file_path = files["files"][0]["path"]
    table = routes()
    ws_base = stack.url.replace("http", "ws")
    async with stack.client(anonymous=True) as anonymous, stack.client(key=BOB) as bob, stack.client(key=ALICE) as alice:
        for kind, method, template in table:
            path = concrete(template, task["id"], file_path)
            if kind == "ws":
                for key, status in ((None, 401), (BOB, 404 if "{task_id}" in template else None)):
                    url = f"{ws_base}{path}" + (f"?access_token={key}" if key else "")
                    async with connect(url) as socket:
                        first = json.loads(await socket.recv())
                        if status is None:
                            assert first["type"].startswith("board."), (path, first)
                            continue
                        assert first["type"] == "error" and first["data"]["status"] == status, (path, first)
                        with pytest.raises(ConnectionClosed):
                            await socket.recv()
                        assert socket.close_code == 4000 + status, path
                continue
            body = {"description": "x"} if method == "POST" else None
            response = await anonymous.request(method, path, json=body)
            if template in OPEN_PATHS:
                assert response.status_code != 401, (method, path)
                continue
            assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
            if "{task_id}" in template:
                # A body the route's schema accepts: the 404 is about the task, not the body.
                valid = {"reject": {"reason": "x"}, "answer": {"answer": "x"}}.get(template.rsplit("/", 1)[-1], {})
                theirs = await bob.request(method, path, json=valid if method == "POST" else None)
                assert theirs.status_code == 404, (method, path, theirs.status_code, theirs.text[:200])
                assert task["id"] in theirs.json()["detail"]
                # The same route answers its owner (whatever the answer: it is not a 404 of the task).
                own = await alice.request(method, path, json=valid if method == "POST" else None)
                assert own.status_code != 401 and f"no task with id '{task['id']}'" not in own.text, (method, path)


async def test_a_key_in_the_query_opens_only_the_streams(stack, alices_task):
    task, _ = alices_task
    async with stack.client(anonymous=True) as anonymous:
        for path in (f"/api/orchestrate/task/{task['id']}", "/api/orchestrate/tasks", f"/api/orchestrate/task/{task['id']}/files"):
            assert (await anonymous.get(path, params={"access_token": ALICE})).status_code == 401, path
        async with anonymous.stream("GET", f"/api/orchestrate/task/{task['id']}/stream", params={"access_token": ALICE}) as response:
            assert response.status_code == 200


async def test_downloads_take_a_signed_link_for_one_task_and_one_download(stack, alices_task):
    task, files = alices_task
    repository = files["repository"]
    bundle, archive = repository["bundle_url"], repository["archive_url"]
    assert 0 < repository["links_expire_in_s"] <= 3600
    assert ALICE not in bundle + archive and "access_token" not in bundle + archive
    async with stack.client(anonymous=True) as anonymous:
        got = await anonymous.get(bundle)
        assert got.status_code == 200 and got.content.startswith(b"# v2 git bundle")
        assert got.headers["cache-control"] == "private, no-store"
        assert (await anonymous.get(archive)).status_code == 200
        query = parse_qs(urlsplit(bundle).query)
        expires, signature = query["expires"][0], query["signature"][0]
        forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        base = f"/api/orchestrate/task/{task['id']}"
        refused = {
            "forged signature": f"{base}/repository.bundle?expires={expires}&signature={forged}",
            "longer life": f"{base}/repository.bundle?expires={int(expires) + 3600}&signature={signature}",
            "the other download": f"{base}/repository.tar.gz?expires={expires}&signature={signature}",
            "expired": f"{base}/repository.bundle?expires={int(time.time()) - 1}&signature={signature}",
        }
        for why, url in refused.items():
            response = await anonymous.get(url)
            assert response.status_code == 401, (why, response.status_code)
        # A link opens nothing else of the task.
        link_query = urlsplit(bundle).query
        for other in (f"{base}?{link_query}", f"{base}/files?{link_query}"):
            assert (await anonymous.get(other)).status_code == 401, other
    async with stack.client(key=BOB) as bob:
        # Bob cannot mint links for Alice's task.
        assert (await bob.get(f"{base}/files")).status_code == 404


async def test_another_tenants_work_is_not_named_in_the_agent_pool(stack):
    async with stack.client(key=ALICE) as alice, stack.client(key=BOB) as bob, stack.client(key=OPS) as ops:
        slow = await stack.submit(alice, scripted("Alice's slow work", [subtask("s", "devops-expert", sim="latency_ms=6000")]))

        async def busy_with_alices() -> list[dict] | None:
            pool = (await ops.get("/api/agents")).json()
            busy = [a for a in pool if a["current_task"] == slow["id"]]
            return busy or None

        [agent] = await eventually(busy_with_alices, timeout=30)
        seen_by = {
            "alice": next(a for a in (await alice.get("/api/agents")).json() if a["id"] == agent["id"]),
            "bob": next(a for a in (await bob.get("/api/agents")).json() if a["id"] == agent["id"]),
        }
        await stack.wait_task(alice, slow["id"])
    assert seen_by["alice"]["current_task"] == slow["id"] and seen_by["alice"]["current_subtask"] == "s"
    assert seen_by["bob"]["current_task"] is None and seen_by["bob"]["current_subtask"] is None
    assert seen_by["bob"]["status"] == seen_by["alice"]["status"]  # the pool itself stays visible


def series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


async def test_metrics_neither_name_tasks_nor_grow_with_them(stack):
    plan = scripted("Counted", [subtask("a", "fullstack"), subtask("b", "database-expert", ["a"])])

    async def run(client: httpx.AsyncClient, count: int) -> list[str]:
        ids = []
        for _ in range(count):  # one after the other: the tenant's limit is 3
            ids.append((await stack.submit(client, plan))["id"])
            assert (await stack.wait_task(client, ids[-1]))["status"] == "completed"
        return ids

    endpoints = [f"{stack.url}/metrics"] + [
        f"http://127.0.0.1:{c['probe_port']}/metrics" for c in stack.children().values() if c.get("probe_port")
    ]
    assert len(endpoints) >= 4

    async def scrape(client: httpx.AsyncClient) -> str:
        return "\n".join([(await client.get(url)).text for url in endpoints])

    async with stack.client(key=DAVE) as dave:
        await run(dave, 2)  # every series the work makes exists now
        before = series(await scrape(dave))
        ids = await run(dave, 5)  # each task's deadline was published on a subject of its own
        await asyncio.sleep(1)
        text = await scrape(dave)
    new = series(text) - before
    # A bounded label may show a value for the first time (a `nacked` status); a series per task
    # (about twenty per deadline subject, as it was) may not.
    assert len(new) < len(ids), sorted(new)[:20]
    for task_id in ids:
        assert task_id not in text
    assert 'destination="aether.task.created"' in text  # the check reads FastStream's real series


async def test_the_active_task_limit_holds_for_concurrent_submits_and_for_retries(stack):
    slow = scripted("Carol's slow one", [subtask("s", "fullstack", sim="latency_ms=4000")])
    async with stack.client(key=CAROL) as carol:
        answers = await asyncio.gather(
            *(carol.post("/api/orchestrate/task", json={"description": slow}) for _ in range(3 * LIMIT + 4))
        )
        accepted = [a.json() for a in answers if a.status_code == 202]
        assert len(accepted) == LIMIT, [a.status_code for a in answers]
        assert all(a.status_code == 429 and "at most 3" in a.json()["detail"] for a in answers if a.status_code != 202)
        for task in accepted:
            assert (await carol.post(f"/api/orchestrate/task/{task['id']}/cancel")).status_code == 200
        # Room again: the limit counts tasks in progress, and cancelled ones are not.
        running = []
        for _ in range(LIMIT):
            response = await carol.post("/api/orchestrate/task", json={"description": slow})
            assert response.status_code == 202, response.text
            running.append(response.json())
        # A retry puts a task back in progress: it counts like a submit.
        for task in accepted:
            retried = await carol.post(f"/api/orchestrate/task/{task['id']}/retry")
            assert retried.status_code == 429, retried.text
            assert (await carol.get(f"/api/orchestrate/task/{task['id']}")).json()["status"] == "cancelled"
        for task in running:
            await stack.wait_task(carol, task["id"])
        retried = await carol.post(f"/api/orchestrate/task/{accepted[0]['id']}/retry")
        assert retried.status_code == 202, retried.text
        await stack.wait_task(carol, accepted[0]["id"])


async def test_websocket_clients_cannot_make_the_gateway_read_frames(stack):
    board = f"{stack.url.replace('http', 'ws')}/api/orchestrate/tasks/stream?access_token={ALICE}"
    for frame, code in (("x" * (1 << 20), 1009), ("hello", 1003)):  # too big: not read; any: refused
        async with connect(board, max_size=None) as socket:
            await socket.recv()
            await socket.send(frame)
            with pytest.raises(ConnectionClosed):
                while True:
                    await socket.recv()
        assert socket.close_code == code, (len(frame), socket.close_code, socket.close_reason)
        if code == 1003:
            assert "accepts no messages" in socket.close_reason


async def test_docs_and_pages_load_nothing_from_elsewhere_and_cannot_be_framed(stack):
    async with stack.client(anonymous=True) as anonymous:
        docs = await anonymous.get("/docs")
        assert docs.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
        assert "<script>" not in docs.text  # no inline script: the policy forbids them
        for source in sources:
            assert (await anonymous.get(source)).status_code == 200, source
        assert (await anonymous.get("/redoc")).status_code in (401, 404)
        for response in (docs, await anonymous.get("/api/health"), await anonymous.get("/api/orchestrate/tasks")):
            policy = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
