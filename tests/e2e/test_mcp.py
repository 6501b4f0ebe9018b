"""Issue 16, Aether as an MCP server: the official SDK's client against the running stack, at the
current revision (2026-07-28, stateless) and over the initialize handshake (2025-11-25 and older),
behind the same keys and tenants as REST; bad requests get JSON-RPC errors, never a 5xx or a hang."""

import asyncio
import contextlib
import json
import time

import httpx
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from aether_gateway.schemas import TaskSubmission
from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
TOOLS = {
    "submit_task": {"description", "master_deployment_id", "require_plan_approval"},
    "get_task": {"task_id"},
    "list_tasks": {"status", "limit"},
    "cancel_task": {"task_id"},
    "retry_task": {"task_id", "subtask_id"},
    "get_task_files": {"task_id"},
    "read_task_file": {"task_id", "path", "written_by"},
    "approve_plan": {"task_id", "plan"},
    "reject_plan": {"task_id", "reason"},
    "answer_question": {"task_id", "subtask_id", "answer"},
}
REVISIONS = {"2026-07-28": "auto", "handshake": "legacy"}
"""The client's `mode`: `auto` discovers the current revision (server/discover); `legacy` makes the
initialize handshake."""
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack():
    running = Stack(
        env={
            "AETHER_API_KEYS": f"alice:{ALICE},bob:{BOB}",
            # A subtask that fails stays failed (for retry): two attempts, quickly.
            "AETHER_LLM_MAX_ATTEMPTS": "2",
            "AETHER_LLM_BACKOFF_BASE_S": "0.05",
            "AETHER_LLM_BACKOFF_MAX_S": "0.1",
        }
    ).start()
    yield running
    running.stop()


@contextlib.asynccontextmanager
async def connect(stack: Stack, key: str | None = ALICE, mode: str = "auto"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(f"{stack.url}/mcp", http_client=http), mode=mode) as client:
            yield client


def structured(result: CallToolResult) -> dict:
    """A tool's answer: its structured content, which its text content says too."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def refusal(result: CallToolResult) -> str:
    assert result.is_error, result
    return result.content[0].text


async def wait(client: Client, task_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = structured(await client.call_tool("get_task", {"task_id": task_id}))
        if task["status"] in TERMINAL:
            return task
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} is still {task['status']}")


@pytest.fixture(scope="module")
async def alices_task(stack):
    """A completed task of Alice's, with files and a repository, submitted over MCP."""
    plan = [subtask("a", "python-backend", sim="path=app/main.py"), subtask("b", "testing-expert", ["a"])]
    async with connect(stack) as client:
        created = structured(await client.call_tool("submit_task", {"description": scripted("Alice's code", plan)}))
        task = await wait(client, created["id"])
    assert task["status"] == "completed", task["logs"]
    return task


@pytest.mark.parametrize("revision", REVISIONS)
async def test_the_tools_are_listed_with_their_arguments_and_output_schemas(stack, revision):
    async with connect(stack, mode=REVISIONS[revision]) as client:
        assert client.protocol_version == ("2026-07-28" if revision == "2026-07-28" else "2025-11-25")
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert client.server_info is not None and client.server_info.name == "aether"
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert {name: set(t.input_schema["properties"]) for name, t in tools.items()} == TOOLS
    assert tools["submit_task"].input_schema["required"] == ["description"]
    assert tools["retry_task"].input_schema["required"] == ["task_id"]
    assert set(tools["list_tasks"].input_schema["properties"]["limit"]) >= {"minimum", "maximum"}
    for tool in tools.values():
        assert tool.description and tool.output_schema, tool.name
    assert {"id", "status", "final_result", "subtasks"} <= set(tools["get_task"].output_schema["properties"])
    assert tools["get_task"].annotations.read_only_hint and tools["cancel_task"].annotations.destructive_hint
    assert templates == {"aether://tasks/{task_id}/result", "aether://tasks/{task_id}/files/{+path}"}


@pytest.mark.parametrize("revision", REVISIONS)
async def test_a_task_submitted_over_mcp_runs_to_its_result_files_and_repository(stack, revision):
    plan = [subtask("api", "python-backend", sim="path=app/api.py"), subtask("tests", "testing-expert", ["api"])]
    async with connect(stack, mode=REVISIONS[revision]) as client, stack.client(key=ALICE) as rest:
        submitted = await client.call_tool("submit_task", {"description": scripted(f"Over MCP ({revision})", plan)})
        created = structured(submitted)
        assert json.loads(submitted.content[0].text) == created  # the text says what the structure does
        assert created["status"] == "pending" and created["master_deployment_id"] == "jason"
        task = await wait(client, created["id"])
        assert task["status"] == "completed", task["logs"]
        assert task == (await rest.get(f"/api/orchestrate/task/{created['id']}")).json() | {"logs": task["logs"]}
        assert [s["id"] for s in task["subtasks"]] == ["api", "tests"] and task["final_result"]

        listed = structured(await client.call_tool("list_tasks", {"status": "completed", "limit": 500}))
        assert created["id"] in [t["id"] for t in listed["tasks"]] and listed["total"] >= 1
        assert all(t["status"] == "completed" for t in listed["tasks"])
        assert len(structured(await client.call_tool("list_tasks", {"limit": 1}))["tasks"]) == 1

        result = await client.read_resource(f"aether://tasks/{created['id']}/result")
        assert result.contents[0].text == task["final_result"]
        assert result.contents[0].mime_type == "text/markdown"

        workspace = structured(await client.call_tool("get_task_files", {"task_id": created["id"]}))
        assert workspace == (await rest.get(f"/api/orchestrate/task/{created['id']}/files")).json() | {
            "repository": workspace["repository"]
        }
        assert "app/api.py" in [f["path"] for f in workspace["files"]]
        read = await client.call_tool("read_task_file", {"task_id": created["id"], "path": "app/api.py"})
        content = structured(read)
        on_disk = (await rest.get(f"/api/orchestrate/task/{created['id']}/files/app/api.py")).text
        assert content["content"] == on_disk and content["encoding"] == "utf-8"
        assert read.content[0].text == on_disk  # the text content is the file itself
        assert content["written_by"] == "api" and content["size"] == len(on_disk.encode())
        by_resource = await client.read_resource(f"aether://tasks/{created['id']}/files/app/api.py")
        assert by_resource.contents[0].text == on_disk
        missing = refusal(await client.call_tool("read_task_file", {"task_id": created["id"], "path": "../etc/passwd"}))
        assert "has no file" in missing

    repository = workspace["repository"]
    assert repository["bundle_url"].startswith(f"{stack.url}/api/orchestrate/task/{created['id']}/repository.bundle?")
    async with httpx.AsyncClient(timeout=30) as anonymous:  # the link is the key, for a while
        bundle = await anonymous.get(repository["bundle_url"])
        archive = await anonymous.get(repository["archive_url"])
    assert bundle.status_code == 200 and bundle.content.startswith(b"# v2 git bundle")
    assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b"
    assert ALICE not in repository["bundle_url"]


async def test_cancel_and_retry_over_mcp(stack):
    slow = scripted("Cancel me", [subtask("long", "fullstack", sim="latency_ms=8000"), subtask("after", "python-backend", ["long"])])
    flaky = scripted(
        "Retry me",
        [subtask("flaky", "python-backend", sim="fail=503 times=2"), subtask("after", "fullstack", ["flaky"]), subtask("fine", "fullstack")],
    )
    async with connect(stack) as client:
        created = structured(await client.call_tool("submit_task", {"description": slow}))
        cancelled = structured(await client.call_tool("cancel_task", {"task_id": created["id"]}))
        assert cancelled["status"] == "cancelled"
        assert "already cancelled" in refusal(await client.call_tool("cancel_task", {"task_id": created["id"]}))

        first = await wait(client, structured(await client.call_tool("submit_task", {"description": flaky}))["id"])
        by_id = {s["id"]: s for s in first["subtasks"]}
        assert by_id["flaky"]["status"] == "failed" and by_id["after"]["blocked_by"] == ["flaky"], first["logs"]
        assert "no subtask" in refusal(await client.call_tool("retry_task", {"task_id": first["id"], "subtask_id": "nope"}))
        assert refusal(await client.call_tool("retry_task", {"task_id": first["id"], "subtask_id": "fine"}))
        retried = structured(await client.call_tool("retry_task", {"task_id": first["id"], "subtask_id": "flaky"}))
        assert retried["round"] == 2
        second = await wait(client, first["id"])
    assert second["status"] == "completed" and [s["status"] for s in second["subtasks"]] == ["completed"] * 3
    assert {s["id"]: s["result"] for s in second["subtasks"]}["fine"] == by_id["fine"]["result"]


async def test_submit_refuses_what_rest_refuses_and_says_whether_plan_approval_is_there(stack):
    async with connect(stack) as client:
        assert "must not be empty" in refusal(await client.call_tool("submit_task", {"description": "   "}))
        unknown = refusal(await client.call_tool("submit_task", {"description": "x", "master_deployment_id": "zeus"}))
        assert "unknown master_deployment_id 'zeus'" in unknown and "jason" in unknown
        assert refusal(await client.call_tool("submit_task", {"description": 5}))
        approval = await client.call_tool(
            "submit_task", {"description": "Plan first [[sim latency_ms=1]]", "require_plan_approval": True}
        )
    if "require_plan_approval" in TaskSubmission.model_fields:
        assert not approval.is_error, approval.content
    else:
        assert "plan approval is not available" in refusal(approval)


async def test_without_a_valid_key_the_endpoint_is_refused(stack):
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as anonymous:
        for headers in ({}, {"Authorization": "Bearer not-a-key-0123456789"}, {"Authorization": "Bearer"}):
            response = await anonymous.post("/mcp", json=request, headers={"Accept": "application/json, text/event-stream", **headers})
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert response.json()["error"] == "invalid_token"
    for key in (None, "not-a-key-0123456789"):
        with pytest.raises(ExceptionGroup) as refused:  # the SDK's client gets no further than discovery
            async with connect(stack, key=key) as client:
                await client.list_tools()
        assert refused.group_contains(MCPError), refused.value


async def test_another_tenants_task_is_no_task_at_all(stack, alices_task):
    task_id = alices_task["id"]
    calls = {
        "get_task": {"task_id": task_id},
        "cancel_task": {"task_id": task_id},
        "retry_task": {"task_id": task_id},
        "get_task_files": {"task_id": task_id},
        "read_task_file": {"task_id": task_id, "path": "app/main.py"},
    }
    async with connect(stack, key=BOB) as bob:
        for name, arguments in calls.items():
            refused = refusal(await bob.call_tool(name, arguments))
            assert f"no task with id '{task_id}'" in refused, (name, refused)
            assert "Alice" not in refused
        assert task_id not in [t["id"] for t in structured(await bob.call_tool("list_tasks", {"limit": 500}))["tasks"]]
        for uri in (f"aether://tasks/{task_id}/result", f"aether://tasks/{task_id}/files/app/main.py"):
            with pytest.raises(MCPError) as refused:
                await bob.read_resource(uri)
            assert refused.value.error.code == -32602 and f"no task with id '{task_id}'" in refused.value.error.message
    async with connect(stack, key=ALICE) as alice:
        assert structured(await alice.call_tool("get_task", {"task_id": task_id}))["status"] == "completed"
        assert "already completed" in refusal(await alice.call_tool("cancel_task", {"task_id": task_id}))


async def test_older_handshake_revisions_are_served_too(stack):
    async with httpx.AsyncClient(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {ALICE}"}) as http:
        for version in ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"):
            initialize = {
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}},
            }
            answer = jsonrpc(await http.post("/mcp", json=initialize, headers=ACCEPT))
            assert answer["result"]["protocolVersion"] == version
            assert answer["result"]["serverInfo"]["name"] == "aether"
            listed = jsonrpc(
                await http.post(
                    "/mcp",
                    json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                    headers={**ACCEPT, "MCP-Protocol-Version": version},
                )
            )
            assert {t["name"] for t in listed["result"]["tools"]} == set(TOOLS), version


# -- bad requests ---------------------------------------------------------------------------

ACCEPT = {"Accept": "application/json, text/event-stream"}
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def modern(method: str, params: dict | None = None, name: str | None = None, **extra) -> tuple[dict, bytes]:
    headers = {**ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"_meta": ENVELOPE, **(params or {})}, **extra}
    return headers, json.dumps(body).encode()


def legacy(body: bytes | str, version: str | None = "2025-11-25") -> tuple[dict, bytes]:
    headers = {**ACCEPT, "Content-Type": "application/json"}
    if version:
        headers["MCP-Protocol-Version"] = version
    return headers, body if isinstance(body, bytes) else body.encode()


def raw_modern(body: bytes | str) -> tuple[dict, bytes]:
    headers = {**ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": MODERN}
    return headers, body if isinstance(body, bytes) else body.encode()


def jsonrpc(response: httpx.Response) -> dict:
    """The JSON-RPC message of an answer, sent as JSON or as the one event of an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [e for e in response.text.replace("\r\n", "\n").split("\n\n") if "data:" in e]
        lines = events[-1].split("\n")
        return json.loads("\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:")))
    return response.json()


PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
BAD_REQUESTS = {
    # name: (headers and body, HTTP status, JSON-RPC error code, or None: a tool's error result)
    "not JSON (2026-07-28)": (raw_modern("{not json"), 400, PARSE_ERROR),
    "not JSON (handshake)": (legacy("{not json"), 400, PARSE_ERROR),
    "not UTF-8": (raw_modern(b"\xff\xfe\x00{"), 400, PARSE_ERROR),
    "nested 100,000 deep (2026-07-28)": (raw_modern("[" * 100_000 + "]" * 100_000), 400, PARSE_ERROR),
    "nested 100,000 deep (handshake)": (legacy("[" * 100_000 + "]" * 100_000), 400, PARSE_ERROR),
    "a 5,000-digit id": (raw_modern('{"jsonrpc":"2.0","id":' + "9" * 5000 + ',"method":"tools/list"}'), 400, PARSE_ERROR),
    "a batch (2026-07-28)": (raw_modern('[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]'), 400, INVALID_REQUEST),
    "a batch (handshake)": (legacy('[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]'), 400, INVALID_PARAMS),
    "null": (raw_modern("null"), 400, INVALID_REQUEST),
    "an object id": (raw_modern('{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}'), 400, INVALID_REQUEST),
    "a posted response": (raw_modern('{"jsonrpc":"2.0","id":1,"result":{}}'), 400, INVALID_REQUEST),
    "params not an object": (legacy('{"jsonrpc":"2.0","id":1,"method":"tools/list","params":5}'), 400, INVALID_PARAMS),
    "unknown method (2026-07-28)": (modern("tasks/steal"), 404, METHOD_NOT_FOUND),
    "unknown method (handshake)": (legacy('{"jsonrpc":"2.0","id":1,"method":"tasks/steal"}'), 200, METHOD_NOT_FOUND),
    "no envelope in _meta": (
        ({**raw_modern("")[0], "Mcp-Method": "tools/list"}, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'), 400, INVALID_PARAMS,
    ),
    "headers that contradict the body": (({**modern("tools/list")[0], "Mcp-Method": "tools/call"}, modern("tools/list")[1]), 400, -32020),
    "an unknown revision": (
        (
            {**modern("tools/list")[0], "MCP-Protocol-Version": "1999-01-01"},
            modern("tools/list")[1].replace(MODERN.encode(), b"1999-01-01"),
        ),
        400, -32022,
    ),
    "an unknown resource": (modern("resources/read", {"uri": "file:///etc/passwd"}, name="file:///etc/passwd"), 400, INVALID_PARAMS),
    "a resource path that climbs out": (
        modern("resources/read", {"uri": "aether://tasks/x/files/../../etc/passwd"}, name="aether://tasks/x/files/../../etc/passwd"),
        400, INVALID_PARAMS,
    ),
    "an unknown tool": (modern("tools/call", {"name": "rm_rf", "arguments": {}}, name="rm_rf"), 200, None),
    "a tool without its argument": (modern("tools/call", {"name": "get_task", "arguments": {}}, name="get_task"), 200, None),
    "an argument of the wrong type": (modern("tools/call", {"name": "list_tasks", "arguments": {"limit": "all"}}, name="list_tasks"), 200, None),
    "an argument out of range": (modern("tools/call", {"name": "list_tasks", "arguments": {"limit": 501}}, name="list_tasks"), 200, None),
    "a task id NATS cannot hold": (modern("tools/call", {"name": "get_task", "arguments": {"task_id": "Æ.>"}}, name="get_task"), 200, None),
    "a 2 MB body": (raw_modern('{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"' + "x" * 2_000_000 + '"}}'), 413, INVALID_REQUEST),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
async def test_a_bad_request_gets_the_protocols_error_answer(stack, case):
    (headers, body), status, code = BAD_REQUESTS[case]
    async with stack.client(key=ALICE, timeout=20) as http:  # a hang fails on the timeout
        response = await http.post("/mcp", content=body, headers=headers)
    assert response.status_code == status, (response.status_code, response.text[:300])
    answer = jsonrpc(response)
    assert answer["jsonrpc"] == "2.0"
    if code is None:
        assert answer["result"]["isError"] is True and answer["result"]["content"][0]["text"], answer
    else:
        assert answer["error"]["code"] == code and answer["error"]["message"], answer


async def test_a_body_sent_in_chunks_is_cut_at_the_limit_and_other_misuse_is_a_4xx(stack):
    async def chunks():
        for _ in range(30):
            yield b"x" * 100_000

    async with stack.client(key=ALICE, timeout=20) as http:
        chunked = await http.post("/mcp", content=chunks(), headers=raw_modern("")[0])
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == INVALID_REQUEST
        for method in ("GET", "DELETE", "PUT"):  # stateless: no stream to open, no session to end
            answer = await http.request(method, "/mcp", headers=ACCEPT)
            assert answer.status_code == 405 and answer.headers["allow"] == "POST", method
        plain = await http.post("/mcp", content=b"{}", headers={**raw_modern("")[0], "Content-Type": "text/plain"})
        assert plain.status_code == 400
        html = await http.post("/mcp", content=b"{}", headers={**raw_modern("")[0], "Accept": "text/html"})
        assert html.status_code == 406
        for version, (headers, body) in {"2026-07-28": modern("tools/list"), "handshake": legacy('{"jsonrpc":"2.0","id":1,"method":"tools/list"}')}.items():
            only_json = await http.post("/mcp", content=body, headers={**headers, "Accept": "application/json"})
            assert only_json.status_code == 200 and only_json.headers["content-type"] == "application/json", version
            assert {t["name"] for t in only_json.json()["result"]["tools"]} == set(TOOLS), version
        foreign = await http.post("/mcp", content=modern("tools/list")[1], headers={**modern("tools/list")[0], "Origin": "http://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"]["code"] == INVALID_REQUEST
        own = await http.post("/mcp", content=modern("tools/list")[1], headers={**modern("tools/list")[0], "Origin": stack.url})
        assert own.status_code == 200 and jsonrpc(own)["result"]["tools"]
        assert (await http.post("/mcp/mcp", content=b"{}", headers=ACCEPT)).status_code == 404


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
METHODS = st.sampled_from(
    ["initialize", "server/discover", "tools/list", "tools/call", "resources/read", "resources/list",
     "resources/templates/list", "prompts/list", "ping", "notifications/initialized", "subscriptions/listen"]
) | st.text(max_size=20)
READ_ONLY_TOOLS = st.sampled_from(["get_task", "list_tasks", "get_task_files", "read_task_file", "nope"])


@st.composite
def messages(draw) -> tuple[dict, bytes]:
    method = draw(METHODS)
    params = draw(st.dictionaries(st.sampled_from(["name", "arguments", "uri", "cursor", "_meta", "x"]), JSON, max_size=4))
    if method == "tools/call" and draw(st.booleans()):
        params["name"] = draw(READ_ONLY_TOOLS)  # never one that starts or stops work
    if draw(st.integers(0, 3)):
        params["_meta"] = ENVELOPE
    message = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0"])), "method": method, "params": params}
    if draw(st.integers(0, 4)):  # mostly requests, which are owed an answer; else notifications
        message["id"] = draw(st.integers(-(2**53), 2**53) | st.text(max_size=8) | JSON)
    if draw(st.integers(0, 9)) == 0:
        message = draw(JSON)  # not even shaped like a message
    headers = {**ACCEPT, "Content-Type": "application/json"}
    version = draw(st.sampled_from([None, MODERN, "2025-11-25", "2025-03-26", "1999-01-01"]))
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if draw(st.integers(0, 3)):
        headers["Mcp-Method"] = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz/", min_size=1, max_size=12))
        if method.isascii() and method.isprintable() and method.strip() == method and method and draw(st.booleans()):
            headers["Mcp-Method"] = method
    name = params.get("name") if isinstance(message, dict) else None
    if isinstance(name, str) and name.isascii() and name.isprintable() and name.strip() == name and draw(st.booleans()):
        headers["Mcp-Name"] = name
    return headers, json.dumps(message).encode()


def test_fuzzed_messages_never_get_a_5xx_or_a_hang(stack):
    answered: dict[int, int] = {}
    with httpx.Client(base_url=stack.url, timeout=20, headers={"Authorization": f"Bearer {ALICE}"}) as http:

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(messages())
        def post(message):
            headers, body = message
            response = http.post("/mcp", content=body, headers=headers)
            answered[response.status_code] = answered.get(response.status_code, 0) + 1
            assert response.status_code < 500, (body[:300], response.text[:300])
            if response.status_code == 202:
                return  # a notification, acknowledged
            assert response.content, (response.status_code, headers, body[:300])
            answer = jsonrpc(response)
            assert answer.get("jsonrpc") == "2.0" and ("result" in answer or isinstance(answer["error"]["code"], int)), answer

        post()
        # Still serving after all that.
        listed = http.post("/mcp", content=modern("tools/list")[1], headers=modern("tools/list")[0])
    print("answers by status:", dict(sorted(answered.items())))
    assert {t["name"] for t in jsonrpc(listed)["result"]["tools"]} == set(TOOLS)
    assert len(answered) > 2, answered  # the fuzzing reached past the first check



async def wait_for(client: Client, task_id: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = structured(await client.call_tool("get_task", {"task_id": task_id}))
        if done(task):
            return task
        assert task["status"] not in TERMINAL, task["logs"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} is still {task['status']}")


async def test_a_person_approves_rejects_and_answers_over_mcp(stack):
    """Issue 15's three acts as MCP tools, over the same control functions as REST: a plan
    approved (after an invalid edit is refused with every reason), one rejected, an expert's
    question answered; Bob can do none of it to Alice's tasks."""
    asking = {**subtask("ask", "python-backend", sim="ask=1"), "verify": ["python3 -m pytest -q"]}
    async with connect(stack) as alice, connect(stack, BOB) as bob:
        submit = {"description": scripted("Approve then answer", [asking]), "require_plan_approval": True}
        first = structured(await alice.call_tool("submit_task", submit))
        waiting = await wait_for(alice, first["id"], lambda t: t["status"] == "awaiting_approval")
        assert [s["id"] for s in waiting["subtasks"]] == ["ask"]

        bad = {"analysis": "mine", "subtasks": [{"id": "x", "description": "d", "agent_type": "wizard", "depends_on": ["y"]}]}
        refused = refusal(await alice.call_tool("approve_plan", {"task_id": first["id"], "plan": bad}))
        assert "wizard" in refused and "y" in refused, refused
        assert "no task" in refusal(await bob.call_tool("approve_plan", {"task_id": first["id"]}))
        approved = structured(await alice.call_tool("approve_plan", {"task_id": first["id"]}))
        assert approved["status"] == "executing"
        assert refusal(await alice.call_tool("approve_plan", {"task_id": first["id"]}))  # not awaiting any more

        asked = await wait_for(alice, first["id"], lambda t: t["subtasks"][0]["status"] == "awaiting_input")
        assert asked["subtasks"][0]["question"]
        assert "no task" in refusal(await bob.call_tool("answer_question", {"task_id": first["id"], "subtask_id": "ask", "answer": "x"}))
        assert refusal(await alice.call_tool("answer_question", {"task_id": first["id"], "subtask_id": "nope", "answer": "x"}))
        answered = structured(await alice.call_tool("answer_question", {"task_id": first["id"], "subtask_id": "ask", "answer": "SQLite"}))
        assert answered["status"] == "executing"
        done = await wait(alice, first["id"], timeout=180)
        assert done["status"] == "completed", done["logs"]
        assert done["subtasks"][0]["answer"] == "SQLite"

        second = structured(await alice.call_tool("submit_task", {**submit, "description": scripted("Reject me", [asking])}))
        await wait_for(alice, second["id"], lambda t: t["status"] == "awaiting_approval")
        rejected = structured(await alice.call_tool("reject_plan", {"task_id": second["id"], "reason": "too big for today"}))
        assert rejected["status"] == "cancelled" and "too big for today" in (rejected["error"] or "")
