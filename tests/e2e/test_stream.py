"""Live progress over SSE and WebSocket against the running stack: a client that leaves mid-task
and comes back with its last position gets every missed event exactly once, in order."""

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import sse
from tests.support.plans import scripted, subtask

pytestmark = pytest.mark.e2e


def chain(title: str) -> str:
    # b is slow, so a client that leaves when a completes misses b, c and the synthesis.
    return scripted(
        title,
        [
            subtask("a", "database-expert"),
            subtask("b", "python-backend", deps=["a"], sim="latency_ms=700"),
            subtask("c", "testing-expert", deps=["b"]),
        ],
    )


def completed(message, subtask_id: str) -> bool:
    data = message.data if hasattr(message, "data") else message["data"]
    kind = message.type if hasattr(message, "type") else message["type"]
    return kind == "task.event" and data["subtask_id"] == subtask_id and data["status"] == "completed"


def assert_exactly_the_history(events: list[dict], final: dict) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(final["logs"]) + 1))
    assert [e["log"] for e in events] == final["logs"]


async def test_an_sse_client_that_leaves_mid_task_gets_every_missed_event_once_on_resume(stack):
    async with stack.client() as client:
        task = await stack.submit(client, chain("SSE resume"))
        url = f"/api/orchestrate/task/{task['id']}/stream"
        before = []
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for message in sse.messages(response):
                before.append(message)
                if completed(message, "a"):
                    break  # leave with events still unread in the buffer: they count as missed
        final = await stack.wait_task(client, task["id"])
        last_id = [m.id for m in before if m.id is not None][-1]

        after = []
        async with client.stream("GET", url, headers={"Last-Event-ID": last_id}) as response:
            async for message in sse.messages(response):
                after.append(message)  # the server ends the stream after task.end

    events = [m.data for m in before + after if m.event == "task.event"]
    assert_exactly_the_history(events, final)
    missed = [m.data["seq"] for m in after if m.event == "task.event"]
    assert missed and missed[0] == int(last_id) + 1
    assert any(e["subtask_id"] == "b" and e["status"] == "completed" for e in (m.data for m in after if m.event == "task.event"))
    state, end = after[-2], after[-1]
    assert state.event == "task.state" and state.id is None
    assert state.data["final_result"] == final["final_result"] and state.data["revision"] == final["revision"]
    assert "logs" not in state.data
    assert end.event == "task.end" and end.data == {"task_id": task["id"], "status": "completed", "last_seq": len(final["logs"])}


async def test_a_websocket_client_that_leaves_mid_task_gets_every_missed_event_once_on_resume(stack):
    ws_base = stack.url.replace("http://", "ws://")
    async with stack.client() as client:
        task = await stack.submit(client, chain("WebSocket resume"))
        url = f"{ws_base}/api/orchestrate/task/{task['id']}/stream"
        before = []
        async with connect(url, additional_headers=stack.auth_headers()) as websocket:
            async for frame in websocket:
                message = json.loads(frame)
                before.append(message)
                if completed(message, "a"):
                    break
        final = await stack.wait_task(client, task["id"])
        last_seq = max(int(m["id"]) for m in before if m["type"] == "task.event")

        after = []
        async with connect(f"{url}?after={last_seq}", additional_headers=stack.auth_headers()) as websocket:
            async for frame in websocket:
                after.append(json.loads(frame))
            assert websocket.close_code == 1000

    events = [m["data"] for m in before + after if m["type"] == "task.event"]
    assert_exactly_the_history(events, final)
    assert min(int(m["id"]) for m in after if m["type"] == "task.event") == last_seq + 1
    assert [m["type"] for m in after[-2:]] == ["task.state", "task.end"]


async def test_a_finished_task_replays_its_whole_history_over_both_transports(stack):
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Replay", [subtask("x", "fullstack")]))
        final = await stack.wait_task(client, task["id"])
        async with client.stream("GET", f"/api/orchestrate/task/{task['id']}/stream") as response:
            over_sse = [m async for m in sse.messages(response)]
    url = f"{stack.url.replace('http', 'ws')}/api/orchestrate/task/{task['id']}/stream?after=0&access_token={stack.api_key}"
    async with connect(url) as ws:  # the key as a query parameter, as a browser must send it
        over_ws = [json.loads(frame) async for frame in ws]
    assert [(m.event, m.id, m.data) for m in over_sse] == [(m["type"], m["id"], m["data"]) for m in over_ws]
    assert_exactly_the_history([m.data for m in over_sse if m.event == "task.event"], final)


async def test_a_board_client_that_leaves_gets_every_task_that_changed_meanwhile_once_in_order(stack):
    async with stack.client() as client:
        seen = []
        async with client.stream("GET", "/api/orchestrate/tasks/stream", params={"limit": 5}) as response:
            async for message in sse.messages(response):
                seen.append(message)
                if message.event == "board.ready":
                    break
        position = seen[-1].id
        assert int(position) == seen[-1].data["revision"]

        tasks = [await stack.submit(client, chain(f"Board {n}")) for n in range(3)]
        ours = {t["id"] for t in tasks}
        async with client.stream("GET", "/api/orchestrate/tasks/stream", headers={"Last-Event-ID": position}) as response:
            async for message in sse.messages(response):
                seen.append(message)
                if message.event == "board.task" and message.data["id"] in ours and message.data["progress"]["completed"] >= 1:
                    break
        position = [m.id for m in seen if m.id is not None][-1]
        finals = {t["id"]: await stack.wait_task(client, t["id"]) for t in tasks}

        async with client.stream("GET", "/api/orchestrate/tasks/stream", params={"after": position}) as response:
            async for message in sse.messages(response):
                seen.append(message)
                if message.event == "board.ready":
                    break

    changes = [m for m in seen if m.event == "board.task"]
    revisions = [int(m.id) for m in changes]
    assert revisions == sorted(set(revisions)), "a change was sent twice or out of order"
    assert all(int(m.id) == m.data["revision"] for m in changes)
    for task_id, final in finals.items():
        last = [m.data for m in changes if m.data["id"] == task_id][-1]
        assert last["revision"] == final["revision"] and last["status"] == "completed"
        assert last["last_event"]["log"] == final["logs"][-1]


async def test_board_websocket_sends_the_backlog_then_ready(stack):
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Board ws", [subtask("x", "fullstack")]))
        await stack.wait_task(client, task["id"])
    async with connect(f"{stack.url.replace('http', 'ws')}/api/orchestrate/tasks/stream?limit=1", additional_headers=stack.auth_headers()) as ws:
        backlog = [json.loads(await ws.recv()) for _ in range(2)]
    assert [m["type"] for m in backlog] == ["board.task", "board.ready"]
    assert backlog[0]["data"]["id"] == task["id"]


@pytest.mark.parametrize(
    ("path", "headers", "status", "detail"),
    [
        ("/api/orchestrate/task/00000000-0000-7000-8000-000000000000/stream", {}, 404, "no task with id"),
        ("/api/orchestrate/task/no.such.task/stream", {}, 404, "no task with id"),
        ("/api/orchestrate/tasks/stream?after=abc", {}, 422, "after must be a non-negative integer"),
        ("/api/orchestrate/tasks/stream?after=-2", {}, 422, "after must be a non-negative integer"),
        ("/api/orchestrate/tasks/stream", {"Last-Event-ID": "x1"}, 422, "Last-Event-ID must be a non-negative integer"),
        ("/api/orchestrate/tasks/stream?limit=0", {}, 422, "limit"),
    ],
)
async def test_bad_stream_requests_get_a_4xx_with_a_message(stack, path, headers, status, detail):
    headers = {**stack.auth_headers(), **headers}
    async with stack.client() as client:
        response = await client.get(path, headers=headers)
    assert response.status_code == status
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "code", "detail"),
    [
        ("/api/orchestrate/task/00000000-0000-7000-8000-000000000000/stream", 4404, "no task with id"),
        ("/api/orchestrate/tasks/stream?after=soon", 4422, "after must be a non-negative integer"),
        ("/api/orchestrate/tasks/stream?limit=501", 4422, "limit must be between 1 and 500"),
    ],
)
async def test_bad_websocket_requests_are_told_why_before_the_close(stack, path, code, detail):
    async with connect(f"{stack.url.replace('http', 'ws')}{path}", additional_headers=stack.auth_headers()) as ws:
        message = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert message["type"] == "error" and detail in message["data"]["detail"]
    assert ws.close_code == code and detail in ws.close_reason


@pytest.mark.parametrize("path", ["/api/orchestrate/tasks/stream", "/api/orchestrate/task/00000000-0000-7000-8000-000000000000/stream"])
async def test_streams_need_an_api_key(stack, path):
    async with stack.client(anonymous=True) as client:
        response = await client.get(path)
    assert response.status_code == 401 and "Authorization: Bearer" in response.json()["detail"]
    async with connect(f"{stack.url.replace('http', 'ws')}{path}?access_token=not-a-key-0000000000") as ws:
        message = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert message["data"]["status"] == 401 and ws.close_code == 4401
