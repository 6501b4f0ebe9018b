"""One task is one trace across every service, exported over OTLP (both transports) as Jaeger
would receive it: the services run as separate processes (`make up`), a receiver in the test
stands in for Jaeger and the assertions read the tree it got."""

import asyncio
import json
import re

import pytest

from tests.support.browser import chromium
from tests.support.otlp import Span, receiver
from tests.support.plans import scripted, subtask
from tests.support.services import eventually
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

JAEGER = "http://jaeger.example:16686"
DIAMOND = [
    subtask("schema", "database-expert"),
    subtask("api", "python-backend", ["schema"]),
    subtask("ui", "react-frontend", ["schema"]),
    subtask("tests", "testing-expert", ["api", "ui"]),
]


@pytest.fixture(scope="module", params=["http/protobuf", "grpc"])
def traced(request):
    sink = receiver(request.param).start()
    stack = Stack(
        ui=True,  # for the Mission Board's link to the trace
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": request.param,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "AETHER_JAEGER_URL": JAEGER,
            # A failed LLM call fails its subtask at once (for the retry test).
            "AETHER_LLM_MAX_ATTEMPTS": "1",
        }
    )
    try:
        stack.start()
        yield stack, sink
    finally:
        stack.stop()
        sink.stop()


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    while span.parent_id is not None:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def services_along(chain: list[Span]) -> list[str]:
    """The services a path visits, each run of spans of one service counted once."""
    visited: list[str] = []
    for span in chain:
        if not visited or visited[-1] != span.service:
            visited.append(span.service)
    return visited


async def test_one_task_is_one_trace_from_the_post_to_the_synthesis(traced):
    stack, sink = traced
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Traced diamond", DIAMOND))
        task = await stack.wait_task(client, created["id"])
        health = (await client.get("/api/health")).json()
        config = (await client.get("/api/config")).json()
    assert task["status"] == "completed", task["logs"]
    trace_id = created["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
    assert task["trace_id"] == trace_id
    assert config == {"jaeger_url": JAEGER}
    for service in ("gateway", "planner", "executor", "synthesizer"):
        for instance in health["services"][service]["instances"]:
            assert instance["tracing"] == f"otlp ({sink.protocol})"

    def whole_trace() -> list[Span] | None:
        spans = [s for s in sink.snapshot() if s.trace_id == trace_id]
        ids = {s.span_id for s in spans}
        # Complete once the synthesizer's consumer span (it ends last), the four subtasks and the
        # six LLM calls are in, and no span of the trace points to a parent yet to arrive.
        done = (
            any(s.service == "synthesizer" and s.kind == "SPAN_KIND_CONSUMER" for s in spans)
            and len({s.name for s in spans if s.name.startswith("subtask ")}) == 4
            and sum(s.name.startswith("chat ") for s in spans) >= 6
        )
        return spans if done and all(s.parent_id in ids for s in spans if s.parent_id) else None

    async def received():
        return whole_trace()

    try:
        spans = await eventually(received, timeout=60)
    except TimeoutError:
        got = sink.snapshot()
        mine = sorted({s.service for s in got if s.trace_id == trace_id})
        elsewhere = [s for s in got if s.trace_id != trace_id and s.attributes.get("aether.task.id") == task["id"]]
        pytest.fail(
            f"the trace is incomplete: {len(got)} spans received, trace {trace_id} has spans of "
            f"{mine}; spans of the task in other traces: {elsewhere}"
        )
    by_id = {s.span_id: s for s in spans}

    # Every span about this task is in this one trace, and the trace is one tree.
    assert all(
        s.trace_id == trace_id for s in sink.snapshot() if s.attributes.get("aether.task.id") == task["id"]
    )
    [root] = [s for s in spans if s.parent_id is None]
    assert (root.service, root.kind, root.name) == ("gateway", "SPAN_KIND_SERVER", "POST /api/orchestrate/task")
    assert root.attributes["aether.task.id"] == task["id"]
    assert {s.service for s in spans} == {"gateway", "planner", "executor", "synthesizer"}

    # Each unit of work has one span that did it; an attempt that came early (the planner may
    # see the event before the gateway's state write) is in the trace too, marked, not an error.
    def one(name: str) -> Span:
        attempts = [s for s in spans if s.name == name]
        assert not any(s.error for s in attempts), attempts
        [done] = [s for s in attempts if "aether.deferred" not in s.events]
        return done

    # Spans nest as the work nests: synthesis under the last subtask, a subtask under the one
    # that made it ready, the first subtask under the plan, the plan under the POST.
    plan, synthesis = one("plan"), one("synthesis")
    work = {i: one(f"subtask {i}") for i in ("api", "schema", "tests", "ui")}
    above = {name: [a.span_id for a in ancestors(span, by_id)] for name, span in work.items()}
    assert plan.span_id in above["schema"] and root.span_id in above["schema"]
    assert work["schema"].span_id in above["api"] and work["schema"].span_id in above["ui"]
    assert work["api"].span_id in above["tests"] or work["ui"].span_id in above["tests"]
    path = [synthesis, *ancestors(synthesis, by_id)]
    assert work["tests"].span_id in {s.span_id for s in path}
    assert services_along(path) == ["synthesizer", "executor", "planner", "gateway"]

    # Work spans carry the task, subtask and agent type.
    by_subtask = {s["id"]: s for s in task["subtasks"]}
    for subtask_id, span in work.items():
        assert span.service == "executor"
        assert span.attributes["aether.task.id"] == task["id"]
        assert span.attributes["aether.agent.type"] == by_subtask[subtask_id]["agent_type"]
    for span in (plan, synthesis):
        assert span.attributes["aether.task.id"] == task["id"]
        assert span.attributes["aether.agent.type"] == "jason"

    # LLM calls follow the GenAI conventions, under the work that made them, with its tokens.
    every_chat = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    chats = [c for c in every_chat if c.parent_id in {plan.span_id, synthesis.span_id} | {w.span_id for w in work.values()}]
    assert len(chats) == 6
    for chat in every_chat:
        a = chat.attributes
        assert chat.kind == "SPAN_KIND_CLIENT" and chat.name == f"chat {a['gen_ai.request.model']}"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.response.model"] and a["gen_ai.response.id"]
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.agent.name"] and a["gen_ai.agent.id"]
        assert a["aether.task.id"] == task["id"] and not chat.error
    experts = {c.attributes["aether.subtask.id"]: c for c in chats if c.attributes["aether.role"] == "expert"}
    assert sorted(experts) == sorted(work)
    for subtask_id, chat in experts.items():
        assert chat.parent_id == work[subtask_id].span_id
        assert chat.attributes["aether.agent.type"] == by_subtask[subtask_id]["agent_type"]
        assert chat.attributes["gen_ai.usage.input_tokens"] == by_subtask[subtask_id]["usage"]["prompt_tokens"]
        assert chat.attributes["gen_ai.usage.output_tokens"] == by_subtask[subtask_id]["usage"]["completion_tokens"]
    [planning] = [c for c in chats if c.attributes["aether.role"] == "planner"]
    [synthesizing] = [c for c in chats if c.attributes["aether.role"] == "synthesizer"]
    assert planning.parent_id == plan.span_id and synthesizing.parent_id == synthesis.span_id
    assert planning.attributes["gen_ai.agent.name"] == "Jason"
    assert planning.attributes["gen_ai.output.type"] == "json"
    assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats) == task["usage"]["prompt_tokens"]


async def test_a_retry_continues_the_tasks_trace(traced):
    stack, sink = traced
    plan = scripted("Traced retry", [subtask("flaky", "fullstack", sim="fail=503 times=1")])
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        failed = await stack.wait_task(client, created["id"])
        assert failed["status"] == "failed", failed["logs"]
        response = await client.post(f"/api/orchestrate/task/{created['id']}/retry")
        assert response.status_code == 202, response.text
        task = await stack.wait_task(client, created["id"])
    assert task["status"] == "completed" and task["round"] == 2, task["logs"]
    trace_id = created["trace_id"]
    assert task["trace_id"] == trace_id

    def rounds() -> list[Span] | None:
        spans = [s for s in sink.snapshot() if s.trace_id == trace_id]
        ids = {s.span_id for s in spans}
        done = sum(s.name == "subtask flaky" for s in spans) == 2 and any(s.name == "synthesis" for s in spans)
        return spans if done and all(s.parent_id in ids for s in spans if s.parent_id) else None

    async def received():
        return rounds()

    spans = await eventually(received, timeout=60)
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if s.parent_id is None]
    assert root.name == "POST /api/orchestrate/task"
    [retry] = [s for s in spans if s.name == "retry"]
    assert retry.service == "gateway" and retry.parent_id == root.span_id
    assert retry.attributes["aether.round"] == 2 and retry.attributes["aether.task.id"] == task["id"]
    # ... linked to the request that asked for it, which is a trace of its own
    [(request_trace, request_span)] = retry.links
    [request] = [s for s in sink.snapshot() if s.span_id == request_span]
    assert request_trace != trace_id and request.kind == "SPAN_KIND_SERVER", [
        (s, s.kind, s.name) for s in sink.snapshot() if s.trace_id == request_trace]
    assert request.name == "POST /api/orchestrate/task/{task_id}/retry"

    # Round 1 under the POST, round 2 under the retry, both in the task's trace.
    def after_retry(span: Span) -> bool:
        return retry.span_id in {a.span_id for a in ancestors(span, by_id)}

    [first] = [s for s in spans if s.name == "subtask flaky" and not after_retry(s)]
    [second] = [s for s in spans if s.name == "subtask flaky" and after_retry(s)]
    assert second.attributes["aether.subtask.id"] == first.attributes["aether.subtask.id"] == "flaky"
    [chat_failed] = [s for s in spans if s.parent_id == first.span_id and s.name.startswith("chat ")]
    assert chat_failed.error and chat_failed.attributes["error.type"] == "503"
    [synthesis] = [s for s in spans if s.name == "synthesis"]
    assert after_retry(synthesis)


async def test_no_key_or_signed_link_reaches_a_span(traced):
    """Browsers send the key as `?access_token=` on streams, and downloads carry a signature:
    neither may be exported with the request's URL (issue 19)."""
    stack, sink = traced
    key = stack.api_key
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Traced links", [subtask("a", "fullstack")]))
        await stack.wait_task(client, created["id"])
        files = (await client.get(f"/api/orchestrate/task/{created['id']}/files")).json()
    signed = files["repository"]["bundle_url"]
    async with stack.client(anonymous=True) as anonymous:
        stream = f"/api/orchestrate/task/{created['id']}/stream"
        async with anonymous.stream("GET", stream, params={"access_token": key, "after": "0"}) as response:
            assert response.status_code == 200
            await response.aread()
        assert (await anonymous.get(signed)).status_code == 200
    signature = signed.split("signature=")[1]

    async def exported():
        spans = [s for s in sink.snapshot() if s.service == "gateway" and s.kind == "SPAN_KIND_SERVER"]
        names = {s.name for s in spans}
        return spans if {"GET /api/orchestrate/task/{task_id}/stream", "GET /api/orchestrate/task/{task_id}/repository.bundle"} <= names else None

    spans = await eventually(exported, timeout=30)
    every_value = json.dumps([s.attributes for s in sink.snapshot()] + [s.name for s in sink.snapshot()], default=str)
    assert key not in every_value and signature not in every_value
    assert "access_token" not in every_value
    # The paths themselves are kept: a trace still says what was asked for.
    assert any(f"/api/orchestrate/task/{created['id']}/stream" in json.dumps(s.attributes) for s in spans)


def test_the_task_page_links_to_the_tasks_trace_in_jaeger(traced):
    """The Mission Board, in a real browser, links a task to `{AETHER_JAEGER_URL}/trace/{trace_id}`,
    and that trace is the one the services exported."""
    from playwright.sync_api import expect

    stack, sink = traced

    async def run_task() -> dict:
        async with stack.client() as client:
            created = await stack.submit(client, scripted("Linked trace", DIAMOND[:1]))
            return await stack.wait_task(client, created["id"])

    task = asyncio.run(run_task())
    assert task["status"] == "completed", task["logs"]
    with chromium() as browser:
        context = browser.new_context()
        context.add_init_script(f"localStorage.setItem('aether.apiKey', {json.dumps(stack.api_key)})")
        page = context.new_page()
        page.goto(f"{stack.url}/tasks/{task['id']}")
        link = page.get_by_test_id("trace-link")
        expect(link).to_have_attribute("href", f"{JAEGER}/trace/{task['trace_id']}")
        expect(link).to_have_attribute("target", "_blank")
        context.close()

    async def exported() -> bool:
        return any(s.trace_id == task["trace_id"] and s.service == "synthesizer" for s in sink.snapshot())

    assert asyncio.run(eventually(exported)), "the linked trace is the one the services exported"


async def test_without_otel_variables_no_service_traces(stack):
    """The stack of the other tests has no OTEL_* variable: nothing is set up, no trace id."""
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Untraced", [subtask("a", "fullstack")]))
        task = await stack.wait_task(client, created["id"])
        health = (await client.get("/api/health")).json()
        config = (await client.get("/api/config")).json()
    assert task["status"] == "completed"
    assert created["trace_id"] is None and task["trace_id"] is None
    assert config == {"jaeger_url": None}
    for service in ("gateway", "planner", "executor", "synthesizer"):
        instances = health["services"][service]["instances"]
        assert instances and all(i["tracing"] == "off" for i in instances)


async def test_every_tool_call_is_an_execute_tool_span_under_its_subtask(traced):
    stack, sink = traced
    plan = [{**subtask("t", "python-backend"), "verify": ["python3 -m pytest -q"]}]
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Traced tools", plan))
        done = await stack.wait_task(client, created["id"])
    assert done["status"] == "completed", done["logs"]
    steps = done["subtasks"][0]["steps"]

    async def exported():
        spans = [s for s in sink.snapshot() if s.trace_id == created["trace_id"]]
        tools = [s for s in spans if s.name.startswith("execute_tool ")]
        return (spans, tools) if len(tools) >= steps else None

    spans, tools = await eventually(exported, timeout=30)
    by_id = {s.span_id: s for s in spans}
    [work] = [s for s in spans if s.name == "subtask t" and any(t.parent_id == s.span_id for t in tools)]
    for span in tools:
        assert span.parent_id == work.span_id and span.service == "executor"
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.name == f"execute_tool {span.attributes['gen_ai.tool.name']}"
        assert span.attributes["gen_ai.tool.call.id"] and span.attributes["aether.subtask.id"] == "t"
    names = [s.attributes["gen_ai.tool.name"] for s in sorted(tools, key=lambda s: s.start_ns)]
    assert names[:2] == ["list_files", "write_file"] and "run_command" in names and "edit_file" in names
    # A command that fails is the work going on, not an error of the span (a misused tool is).
    assert not any(s.error for s in tools if s.attributes["gen_ai.tool.name"] == "run_command")
    assert all(s.parent_id in by_id for s in tools)


async def test_each_request_on_a_kept_alive_connection_starts_a_trace_of_its_own(traced):
    """uvicorn serves the next request of a connection in the previous one's context: without a
    fresh context per request, a request's server span became a child of the one before."""
    stack, sink = traced
    async with stack.client() as client:  # one connection, kept alive
        for _ in range(10):
            await client.get("/api/orchestrate/tasks", params={"limit": 1})
            await client.post("/api/orchestrate/task/nope/cancel")
    names = {"GET /api/orchestrate/tasks", "POST /api/orchestrate/task/{task_id}/cancel"}

    async def exported():
        spans = [s for s in sink.snapshot() if s.service == "gateway" and s.name in names]
        return spans if len(spans) >= 20 else None

    spans = await eventually(exported, timeout=30)
    assert all(s.parent_id is None and s.kind == "SPAN_KIND_SERVER" for s in spans), [
        (s.name, s.kind, s.parent_id) for s in spans if s.parent_id]


async def test_the_waits_for_a_person_are_spans_of_the_tasks_trace_with_their_waiting_time(traced):
    """Issue 15: a plan's approval and an expert's question, each a span from when the wait began
    to when the person answered (`aether.waited_s`); what the answer resumed hangs under it."""
    stack, sink = traced
    plan = [{**subtask("ask", "python-backend", sim="ask=1"), "verify": ["python3 -m pytest -q"]}]
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Traced waits", plan), require_plan_approval=True)
        await stack.wait_task(client, created["id"], until={"awaiting_approval"})
        await asyncio.sleep(1.2)
        assert (await client.post(f"/api/orchestrate/task/{created['id']}/approve")).status_code == 200

        async def asked():
            body = (await client.get(f"/api/orchestrate/task/{created['id']}")).json()
            return body["subtasks"][0]["status"] == "awaiting_input"

        await eventually(asked, timeout=90)
        await asyncio.sleep(1.2)
        assert (await client.post(f"/api/orchestrate/task/{created['id']}/subtasks/ask/answer", json={"answer": "SQLite"})).status_code == 200
        done = await stack.wait_task(client, created["id"], timeout=120)
    assert done["status"] == "completed", done["logs"]

    async def exported():
        spans = [s for s in sink.snapshot() if s.trace_id == created["trace_id"]]
        return spans if any(s.name == "synthesis" for s in spans) and any(s.name == "wait for an answer" for s in spans) else None

    spans = await eventually(exported, timeout=30)
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if s.parent_id is None]
    [approval] = [s for s in spans if s.name == "wait for approval"]
    [question] = [s for s in spans if s.name == "wait for an answer"]
    for wait in (approval, question):
        assert wait.service == "gateway" and wait.parent_id == root.span_id
        assert wait.attributes["aether.waited_s"] >= 1.0
        assert abs((wait.end_ns - wait.start_ns) / 1e9 - wait.attributes["aether.waited_s"]) < 0.01
    assert question.attributes["aether.subtask.id"] == "ask" and question.attributes["aether.question.number"] == 1
    [approve] = [s for s in spans if s.name == "approve"]
    [answer] = [s for s in spans if s.name == "answer"]
    assert approve.attributes["aether.waited_s"] >= 1.0 and answer.attributes["aether.waited_s"] >= 1.0
    # The resumed run of the expert hangs under the answer that resumed it.
    [resumed] = [s for s in spans if s.name == "subtask ask" and s.attributes.get("aether.resumed")]
    assert answer.span_id in {a.span_id for a in ancestors(resumed, by_id)}
    assert resumed.attributes["aether.waited_s"] >= 1.0
