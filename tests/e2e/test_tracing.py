"""One task is one trace across every service, exported over OTLP (both transports) as a backend
would receive it: the services run as separate processes (`make up`), a receiver in the test
stands in for Jaeger or Phoenix and the assertions read the tree it got.

The two stacks differ in more than the transport: the HTTP one runs with the latest experimental
GenAI conventions and message content captured (`OTEL_SEMCONV_STABILITY_OPT_IN`,
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`), the gRPC one with neither, so each test
checks both sets of names and that content appears only on request."""

import asyncio
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest

from tests.support.browser import chromium
from tests.support.otlp import GrpcReceiver, HttpReceiver, Span, depth, receiver, render
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
EXPERTS = {
    "database-expert": "Database Expert",
    "python-backend": "Python Backend Expert",
    "react-frontend": "React Frontend Expert",
    "testing-expert": "Testing & QA Expert",
    "fullstack": "Full-Stack Developer",
}
MAX_DEPTH = 4
"""POST → the task's span → a unit of work → its LLM calls, tools and publishes: for any plan."""
NAMES = re.compile(
    r"POST /api/orchestrate/task(/\{task_id\}/(retry|cancel|approve|reject|subtasks/\{subtask_id\}/answer))?|GET /api/orchestrate/task/\{task_id\}(/\S+)?"
    r"|(GET|HTTP) /api/orchestrate/(task/\{task_id\}|tasks)/stream|invoke_workflow aether|task|retry|cancel|verify"
    r"|plan( Jason)?|replan|invoke_agent( [A-Z][\w &-]+)?|chat [\w.:-]+|execute_tool \w+"
    r"|wait for approval|wait for an answer|approve|reject|answer"
    r"|(publish|process) aether\.[a-z.*-]+"
)
"""Every span name the services may use: operations and templates, never an id (issue 16)."""
WAIT_S = 240
"""Agents start on demand, one process each: slow on a busy machine (no timing is asserted)."""
CONTENT = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result")


@dataclass
class Traced:
    stack: Stack
    sink: HttpReceiver | GrpcReceiver
    latest: bool
    """`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` is set."""
    content: bool
    """`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` is set."""

    def __iter__(self):  # stack, sink = traced
        return iter((self.stack, self.sink))

    @property
    def workflow(self) -> str:
        return "invoke_workflow aether" if self.latest else "task"

    @property
    def plan(self) -> str:
        return "plan Jason" if self.latest else "plan"


@pytest.fixture(scope="module", params=["http/protobuf", "grpc"])
def traced(request):
    latest = content = request.param == "http/protobuf"
    sink = receiver(request.param).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": request.param,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "AETHER_JAEGER_URL": JAEGER,
        # A failed LLM call fails its subtask at once (for the retry test).
        "AETHER_LLM_MAX_ATTEMPTS": "1",
    }
    if latest:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    if content:
        env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    stack = Stack(ui=True, env=env)  # the UI for the Mission Board's link to the trace
    try:
        stack.start()
        yield Traced(stack, sink, latest, content)
    finally:
        stack.stop()
        sink.stop()


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    while span.parent_id is not None:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


async def whole_trace(sink, trace_id: str, done, timeout: float = 60) -> list[Span]:
    """The trace once `done(spans)` holds and no span of it waits for a parent still to come
    (the task's own span comes last: it is exported when the task ends)."""

    async def received():
        spans = [s for s in sink.snapshot() if s.trace_id == trace_id]
        ids = {s.span_id for s in spans}
        complete = spans and all(s.parent_id in ids for s in spans if s.parent_id)
        return spans if complete and done(spans) else None

    try:
        return await eventually(received, timeout=timeout)
    except TimeoutError:
        spans = [s for s in sink.snapshot() if s.trace_id == trace_id]
        pytest.fail(f"trace {trace_id} is incomplete after {timeout}s ({len(spans)} spans):\n{render(spans)}")


def links_of(span: Span) -> set[str]:
    return {span_id for _, span_id in span.links}


def work_units(spans: list[Span], traced: Traced) -> dict[str, Span]:
    """The task's span and, by subtask id, each subtask's span that did the work."""
    [workflow] = [s for s in spans if s.name == traced.workflow]
    agents = [s for s in spans if s.name.startswith("invoke_agent") and "aether.deferred" not in s.events]
    return {"workflow": workflow, **{s.attributes["aether.subtask.id"]: s for s in agents if "aether.subtask.id" in s.attributes}}


async def test_one_task_is_one_trace_and_its_subtasks_are_siblings_under_the_tasks_span(traced):
    stack, sink = traced
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Traced diamond", DIAMOND))
        task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
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

    spans = await whole_trace(sink, trace_id, lambda got: (
        any(s.name == traced.workflow for s in got) and sum(s.name.startswith("chat ") for s in got) >= 6
        and any(s.name == "publish aether.task.finished" for s in got)
    ))
    by_id = {s.span_id: s for s in spans}
    tree = render(spans)

    # Every span about this task is in this one trace, and the trace is one tree.
    assert all(
        s.trace_id == trace_id for s in sink.snapshot() if s.attributes.get("aether.task.id") == task["id"]
    )
    [root] = [s for s in spans if s.parent_id is None]
    assert (root.service, root.kind, root.name) == ("gateway", "SPAN_KIND_SERVER", "POST /api/orchestrate/task")
    assert root.attributes["aether.task.id"] == task["id"]
    assert {s.service for s in spans} == {"gateway", "planner", "executor", "synthesizer"}

    # The task is one span under the POST, lasting from the submission to the end of the task.
    units = work_units(spans, traced)
    workflow = units.pop("workflow")
    assert workflow.parent_id == root.span_id and workflow.kind == "SPAN_KIND_INTERNAL", tree
    a = workflow.attributes
    assert a["aether.task.id"] == task["id"] and a["aether.task.status"] == "completed" and a["aether.round"] == 1
    assert not workflow.error
    if traced.latest:
        assert a["gen_ai.operation.name"] == "invoke_workflow" and a["gen_ai.workflow.name"] == "aether"
    else:
        assert "gen_ai.operation.name" not in a
    inside = [s for s in spans if s.parent_id == workflow.span_id]
    assert workflow.start_ns <= min(s.start_ns for s in inside)
    assert workflow.end_ns >= max(s.end_ns for s in inside if s.name.startswith("invoke_agent")) - 50_000_000

    # Planning, every subtask and the synthesis are siblings under the task's span...
    [plan] = [s for s in spans if s.name == traced.plan and "aether.deferred" not in s.events]
    [synthesis] = [s for s in spans if s.name == "invoke_agent Jason"]
    assert sorted(units) == ["api", "schema", "tests", "ui"], tree
    for span in (plan, synthesis, *units.values()):
        assert span.parent_id == workflow.span_id and span.kind == "SPAN_KIND_INTERNAL" and not span.error, tree
    # ... each linked to what made it start: the plan, the subtask whose end made it ready.
    assert links_of(units["schema"]) == {plan.span_id}, tree
    assert links_of(units["api"]) == links_of(units["ui"]) == {units["schema"].span_id}, tree
    assert links_of(units["tests"]) in ({units["api"].span_id}, {units["ui"].span_id}), tree
    assert links_of(synthesis) == {units["tests"].span_id}, tree

    # The GenAI agent conventions on the work spans.
    by_subtask = {s["id"]: s for s in task["subtasks"]}
    for subtask_id, span in units.items():
        a = span.attributes
        agent_type = by_subtask[subtask_id]["agent_type"]
        assert span.service == "executor" and span.name == f"invoke_agent {EXPERTS[agent_type]}"
        assert a["gen_ai.operation.name"] == "invoke_agent" and a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.agent.name"] == EXPERTS[agent_type] and a["gen_ai.agent.id"] == by_subtask[subtask_id]["agent_id"]
        assert a["gen_ai.request.model"] and a["aether.agent.type"] == agent_type and a["aether.task.id"] == task["id"]
    s = synthesis.attributes
    assert (s["gen_ai.operation.name"], s["gen_ai.agent.name"], s["gen_ai.agent.id"]) == ("invoke_agent", "Jason", "jason")
    assert s["aether.role"] == "synthesizer" and synthesis.service == "synthesizer"
    assert plan.service == "planner" and plan.attributes["gen_ai.agent.name"] == "Jason"
    assert plan.attributes["aether.agent.type"] == "jason" and plan.attributes["aether.task.id"] == task["id"]
    assert plan.attributes.get("gen_ai.operation.name") == ("plan" if traced.latest else None)

    # LLM calls follow the GenAI conventions, under the work that made them, with its tokens.
    every_chat = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    chats = [c for c in every_chat if c.parent_id in {plan.span_id, synthesis.span_id} | {w.span_id for w in units.values()}]
    assert len(chats) == 6
    for chat in every_chat:
        a = chat.attributes
        assert chat.kind == "SPAN_KIND_CLIENT" and chat.name == f"chat {a['gen_ai.request.model']}"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.response.model"] and a["gen_ai.response.id"]
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.agent.name"] and a["gen_ai.agent.id"]
        assert a["aether.task.id"] == task["id"] and not chat.error
    experts = {c.attributes["aether.subtask.id"]: c for c in chats if c.attributes["aether.role"] == "expert"}
    assert sorted(experts) == sorted(units)
    for subtask_id, chat in experts.items():
        assert chat.parent_id == units[subtask_id].span_id
        assert chat.attributes["aether.agent.type"] == by_subtask[subtask_id]["agent_type"]
        assert chat.attributes["gen_ai.usage.input_tokens"] == by_subtask[subtask_id]["usage"]["prompt_tokens"]
        assert chat.attributes["gen_ai.usage.output_tokens"] == by_subtask[subtask_id]["usage"]["completion_tokens"]
    [planning] = [c for c in chats if c.attributes["aether.role"] == "planner"]
    [synthesizing] = [c for c in chats if c.attributes["aether.role"] == "synthesizer"]
    assert planning.parent_id == plan.span_id and synthesizing.parent_id == synthesis.span_id
    assert planning.attributes["gen_ai.agent.name"] == "Jason"
    assert planning.attributes["gen_ai.output.type"] == "json"
    assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats) == task["usage"]["prompt_tokens"]

    # Messaging stays shallow: a publish is one span right under the work (or decision) that
    # sent it; the scheduler's decisions are consumer spans under the task's span, linked to the
    # subtask that ended; nothing of the messaging nests in anything of the messaging.
    for span in (s for s in spans if s.kind == "SPAN_KIND_PRODUCER"):
        assert by_id[span.parent_id].kind in ("SPAN_KIND_INTERNAL", "SPAN_KIND_CONSUMER"), tree
        assert not any(s.parent_id == span.span_id for s in spans), tree
    decisions = [s for s in spans if s.kind == "SPAN_KIND_CONSUMER"]
    assert sorted(s.name for s in decisions) == ["process aether.plan.ready"] + ["process aether.subtask.finished"] * 4
    assert all(s.parent_id == workflow.span_id for s in decisions), tree
    finished = [s for s in decisions if s.name == "process aether.subtask.finished"]
    assert {s.attributes["aether.subtask.id"]: links_of(s) for s in finished} == {
        i: {units[i].span_id} for i in units
    }, tree
    for subtask_id, span in units.items():
        [published] = [s for s in spans if s.parent_id == span.span_id and s.kind == "SPAN_KIND_PRODUCER"]
        assert published.name == "publish aether.subtask.finished" and published.attributes["aether.subtask.id"] == subtask_id

    # Bounded depth, low-cardinality names.
    assert max(depth(s, by_id) for s in spans) == MAX_DEPTH, tree
    assert all(NAMES.fullmatch(s.name) for s in spans), sorted({s.name for s in spans if not NAMES.fullmatch(s.name)})
    assert not any(task["id"] in s.name for s in sink.snapshot())


CHAINS = (2, 8)


async def test_a_chain_of_subtasks_is_as_shallow_as_a_short_one(traced):
    """A subtask used to nest under the one whose end made it ready, three messaging spans per
    hop: a chain of n subtasks was a tree 5n levels deep. Now the depth does not depend on n."""
    stack, sink = traced
    shapes = {}
    async with stack.client() as client:
        for length in CHAINS:
            plan = [subtask(f"s{i}", "fullstack", [f"s{i - 1}"] if i else []) for i in range(length)]
            created = await stack.submit(client, scripted(f"Traced chain of {length}", plan))
            task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
            assert task["status"] == "completed", task["logs"]
            spans = await whole_trace(sink, created["trace_id"], lambda got, length=length: (
                any(s.name == traced.workflow for s in got) and any(s.name == "publish aether.task.finished" for s in got)
                # the scheduler's spans come from another process's exporter, sometimes later
                and sum(s.name == "process aether.subtask.finished" for s in got) >= length
            ))
            shapes[length] = spans
    for length, spans in shapes.items():
        by_id = {s.span_id: s for s in spans}
        tree = render(spans)
        units = work_units(spans, traced)
        workflow = units.pop("workflow")
        assert sorted(units) == sorted(f"s{i}" for i in range(length)), tree
        assert all(u.parent_id == workflow.span_id for u in units.values()), tree
        for i in range(1, length):
            assert links_of(units[f"s{i}"]) == {units[f"s{i - 1}"].span_id}, tree
        assert max(depth(s, by_id) for s in spans) == MAX_DEPTH, tree
        # Each subtask costs a fixed number of spans: its agent, its LLM call, the publish of
        # its end, the scheduler's decision and the publish of what that made ready.
        for i in range(length):
            mine = sorted(s.name for s in spans if s.attributes.get("aether.subtask.id") == f"s{i}")
            assert mine == sorted([
                "chat gpt-4o-mini", "invoke_agent Full-Stack Developer", "process aether.subtask.finished",
                "publish aether.subtask.finished", "publish aether.subtask.ready.fullstack",
            ]), (i, mine)


async def test_a_retry_continues_the_tasks_trace_as_a_new_round(traced):
    stack, sink = traced
    plan = scripted("Traced retry", [subtask("flaky", "fullstack", sim="fail=503 times=1")])
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        failed = await stack.wait_task(client, created["id"], timeout=WAIT_S)
        assert failed["status"] == "failed", failed["logs"]
        response = await client.post(f"/api/orchestrate/task/{created['id']}/retry")
        assert response.status_code == 202, response.text
        task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
    assert task["status"] == "completed" and task["round"] == 2, task["logs"]
    trace_id = created["trace_id"]
    assert task["trace_id"] == trace_id

    def flaky(spans: list[Span]) -> list[Span]:
        return [s for s in spans if s.attributes.get("aether.subtask.id") == "flaky" and s.name.startswith("invoke_agent")]

    spans = await whole_trace(sink, trace_id, lambda got: (
        len(flaky(got)) == 2 and sum(s.name == traced.workflow for s in got) == 2
        and any(s.name == "invoke_agent Jason" for s in got)
    ))
    by_id = {s.span_id: s for s in spans}
    tree = render(spans)
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

    # Round 1 is the task's span under the POST, ended as the task failed; round 2 a new one
    # under the retry; each round's work under its own.
    rounds = {s.attributes["aether.round"]: s for s in spans if s.name == traced.workflow}
    assert rounds[1].parent_id == root.span_id and rounds[2].parent_id == retry.span_id, tree
    assert rounds[1].error and rounds[1].attributes["aether.task.status"] == "failed"
    assert rounds[1].attributes["error.type"] == "task_failed"
    assert not rounds[2].error and rounds[2].attributes["aether.task.status"] == "completed"
    assert rounds[1].end_ns <= rounds[2].start_ns

    def after_retry(span: Span) -> bool:
        return retry.span_id in {a.span_id for a in ancestors(span, by_id)}

    [first] = [s for s in flaky(spans) if not after_retry(s)]
    [second] = [s for s in flaky(spans) if after_retry(s)]
    assert first.parent_id == rounds[1].span_id and second.parent_id == rounds[2].span_id, tree
    [chat_failed] = [s for s in spans if s.parent_id == first.span_id and s.name.startswith("chat ")]
    assert chat_failed.error and chat_failed.attributes["error.type"] == "503"
    [synthesis] = [s for s in spans if s.name == "invoke_agent Jason"]
    assert synthesis.parent_id == rounds[2].span_id
    assert max(depth(s, by_id) for s in spans) == MAX_DEPTH + 1  # the retry adds its one level


async def test_a_cancelled_task_ends_its_span_as_cancelled_not_failed(traced):
    stack, sink = traced
    plan = scripted("Traced cancel", [subtask("slow", "fullstack", sim="latency_ms=60000")])
    async with stack.client() as client:
        created = await stack.submit(client, plan)

        async def running():
            task = (await client.get(f"/api/orchestrate/task/{created['id']}")).json()
            return task if task["subtasks"] and task["subtasks"][0]["status"] == "executing" else None

        await eventually(running, timeout=WAIT_S)
        response = await client.post(f"/api/orchestrate/task/{created['id']}/cancel")
        assert response.status_code == 200, response.text
        task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
    assert task["status"] == "cancelled"
    spans = await whole_trace(sink, created["trace_id"], lambda got: (
        any(s.name == traced.workflow for s in got) and any(s.name == "cancel" for s in got)
        and any(s.name.startswith("invoke_agent") and s.end_ns for s in got)
    ))
    tree = render(spans)
    [root] = [s for s in spans if s.parent_id is None]
    [workflow] = [s for s in spans if s.name == traced.workflow]
    [cancel] = [s for s in spans if s.name == "cancel"]
    assert workflow.parent_id == root.span_id and cancel.parent_id == root.span_id, tree
    assert workflow.attributes["aether.task.status"] == "cancelled" and not workflow.error
    assert workflow.service == "gateway"  # the write that ended the task was the gateway's
    [agent] = [s for s in spans if s.name.startswith("invoke_agent")]
    assert agent.parent_id == workflow.span_id


async def test_a_task_past_its_deadline_is_ended_under_its_span_by_name_not_by_id():
    """NATS fires a task's deadline itself (a message schedule held on `aether.deadline.<task
    id>`): the scheduler's handling of it is one `process aether.task.expired` span under the
    task's, which ends as failed (once, such a span was named after the task)."""
    sink = receiver("http/protobuf").start()
    stack = Stack(env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental", "AETHER_TASK_TIMEOUT_S": "15",
    })
    try:
        stack.start()
        async with stack.client() as client:
            created = await stack.submit(client, scripted("Traced deadline", [subtask("slow", "fullstack", sim="latency_ms=120000")]))
            task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
        assert task["status"] == "failed", task["logs"]
        spans = await whole_trace(sink, created["trace_id"], lambda got: (
            any(s.name == "invoke_workflow aether" for s in got) and any(s.kind == "SPAN_KIND_CONSUMER" and "expired" in s.name for s in got)
        ))
        tree = render(spans)
        [workflow] = [s for s in spans if s.name == "invoke_workflow aether"]
        [expired] = [s for s in spans if s.name == "process aether.task.expired"]
        assert expired.parent_id == workflow.span_id and expired.kind == "SPAN_KIND_CONSUMER", tree
        assert expired.attributes["aether.task.id"] == task["id"]
        assert workflow.error and workflow.attributes["aether.task.status"] == "failed"
        assert workflow.service == "executor"  # the scheduler's write ended the task
        assert all(NAMES.fullmatch(s.name) for s in sink.snapshot()), tree
        assert not any(task["id"] in s.name for s in sink.snapshot())
    finally:
        stack.stop()
        sink.stop()


async def test_polled_reads_and_heartbeats_start_no_trace(traced):
    """A client polling a task and the services' and agents' heartbeats used to add a trace of
    one span each, a dozen per task; a caller that traces its own requests still gets its reads."""
    stack, sink = traced
    before = {s.span_id for s in sink.snapshot()}
    # An earlier test's spans can still arrive (batched export): only traces begun here count.
    began = time.time_ns()
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Polled", [subtask("a", "fullstack")]))
        await stack.wait_task(client, created["id"], timeout=WAIT_S)  # polls the task until it ends
        for path in ("/api/orchestrate/tasks", "/api/orchestrate/agents", "/api/agents", "/api/config",
                     f"/api/orchestrate/task/{created['id']}/subtasks/a/steps"):
            assert (await client.get(path)).status_code == 200, path
        await client.get(f"/tasks/{created['id']}")  # the Mission Board's page (200 once `make ui` built it)
        await asyncio.sleep(7)  # two rounds of every heartbeat
        caller = f"00-{'ab' * 16}-{'cd' * 8}-01"
        traced_read = await client.get(f"/api/orchestrate/task/{created['id']}", headers={"traceparent": caller})
        assert traced_read.status_code == 200

    async def joined():
        return [s for s in sink.snapshot() if s.trace_id == "ab" * 16] or None

    [read] = await eventually(joined, timeout=30)
    assert read.name == "GET /api/orchestrate/task/{task_id}" and read.parent_id == "cd" * 8
    await asyncio.sleep(1)
    traces = defaultdict(list)
    for span in sink.snapshot():
        traces[span.trace_id].append(span)
    new = {
        t: got for t, got in traces.items()
        if not {s.span_id for s in got} & before and t != "ab" * 16 and min(s.start_ns for s in got) >= began
    }
    assert list(new) == [created["trace_id"]], {t: [(s.service, s.name) for s in got] for t, got in new.items()}


async def test_message_content_is_on_spans_only_when_asked_for(traced):
    stack, sink = traced
    marker = "a-description-nobody-else-writes-7f3a"
    plan = [{**subtask("t", "python-backend"), "verify": ["python3 -m pytest -q"]}]
    async with stack.client() as client:
        created = await stack.submit(client, scripted(f"Traced content {marker}", plan))
        task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
    assert task["status"] == "completed", task["logs"]
    spans = await whole_trace(sink, created["trace_id"], lambda got: (
        any(s.name == traced.workflow for s in got) and any(s.name.startswith("execute_tool") for s in got)
    ))
    if not traced.content:
        assert not any(name in s.attributes for s in spans for name in CONTENT)
        assert marker not in json.dumps([s.attributes for s in spans])
        return
    [workflow] = [s for s in spans if s.name == traced.workflow]
    [asked] = json.loads(workflow.attributes["gen_ai.input.messages"])
    assert asked["role"] == "user" and asked["parts"][0]["type"] == "text" and marker in asked["parts"][0]["content"]
    [answered] = json.loads(workflow.attributes["gen_ai.output.messages"])
    assert answered["role"] == "assistant" and answered["parts"][0]["content"] == task["final_result"]
    assert answered["finish_reason"] == "stop"
    chats = [s for s in spans if s.name.startswith("chat ")]
    for chat in chats:
        sent = json.loads(chat.attributes["gen_ai.input.messages"])
        assert [m["role"] for m in sent][:2] == ["system", "user"]
        assert all(p["type"] in ("text", "tool_call", "tool_call_response") for m in sent for p in m["parts"])
        [reply] = json.loads(chat.attributes["gen_ai.output.messages"])
        assert reply["role"] == "assistant" and reply["finish_reason"] == chat.attributes["gen_ai.response.finish_reasons"][0]
    # An expert's call after a tool call carries the call and its result, matched by id.
    acting = [json.loads(c.attributes["gen_ai.input.messages"]) for c in chats if c.attributes.get("aether.subtask.id") == "t"]
    later = acting[-1]
    calls = {p["id"]: p for m in later if m["role"] == "assistant" for p in m["parts"] if p["type"] == "tool_call"}
    responses = {p["id"] for m in later if m["role"] == "tool" for p in m["parts"]}
    assert calls and set(calls) == responses
    assert all(isinstance(c["arguments"], dict) for c in calls.values())
    tools = [s for s in spans if s.name.startswith("execute_tool")]
    assert tools and all(s.attributes["gen_ai.tool.call.id"] in calls for s in tools)
    assert all("gen_ai.tool.call.arguments" in s.attributes and "gen_ai.tool.call.result" in s.attributes for s in tools)


async def test_no_key_or_signed_link_reaches_a_span(traced):
    """Browsers send the key as `?access_token=` on streams, and downloads carry a signature:
    neither may be exported with the request's URL (issue 19)."""
    stack, sink = traced
    key = stack.api_key
    async with stack.client() as client:
        created = await stack.submit(client, scripted("Traced links", [subtask("a", "fullstack")]))
        await stack.wait_task(client, created["id"], timeout=WAIT_S)
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
            return await stack.wait_task(client, created["id"], timeout=WAIT_S)

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
        task = await stack.wait_task(client, created["id"], timeout=WAIT_S)
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
        done = await stack.wait_task(client, created["id"], timeout=WAIT_S)
    assert done["status"] == "completed", done["logs"]
    steps = done["subtasks"][0]["steps"]

    async def exported():
        spans = [s for s in sink.snapshot() if s.trace_id == created["trace_id"]]
        tools = [s for s in spans if s.name.startswith("execute_tool ")]
        return (spans, tools) if len(tools) >= steps else None

    spans, tools = await eventually(exported, timeout=30)
    by_id = {s.span_id: s for s in spans}
    [work] = [s for s in spans if s.name.startswith("invoke_agent") and any(t.parent_id == s.span_id for t in tools)]
    assert work.attributes["aether.subtask.id"] == "t"
    for span in tools:
        assert span.parent_id == work.span_id and span.service == "executor"
        assert span.kind == "SPAN_KIND_INTERNAL"
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
    fresh context per request, a request's server span became a child of the one before.
    (A read that is not polled: polled ones start no trace at all.)"""
    stack, sink = traced
    async with stack.client() as client:  # one connection, kept alive
        for _ in range(10):
            await client.get("/api/orchestrate/task/nope/files")
            await client.post("/api/orchestrate/task/nope/cancel")
    names = {"GET /api/orchestrate/task/{task_id}/files", "POST /api/orchestrate/task/{task_id}/cancel"}

    async def exported():
        spans = [s for s in sink.snapshot() if s.service == "gateway" and s.name in names]
        return spans if len(spans) >= 20 else None

    spans = await eventually(exported, timeout=30)
    assert all(s.parent_id is None and s.kind == "SPAN_KIND_SERVER" for s in spans), [
        (s.name, s.kind, s.parent_id) for s in spans if s.parent_id]


def test_no_span_name_carries_an_id(traced):
    """Over everything this module's tasks exported: names are operations, routes, subjects and
    templates (a per-task name, like the deadlines' once, would make every trace its own kind)."""
    names = {s.name for s in traced.sink.snapshot()}
    assert names and all(NAMES.fullmatch(n) for n in names), sorted(n for n in names if not NAMES.fullmatch(n))


async def test_the_waits_for_a_person_are_spans_of_the_tasks_trace_with_their_waiting_time(traced):
    """Issue 15: a plan's approval and an expert's question, each a span from when the wait began
    to when the person answered (`aether.waited_s`); what the answer resumed hangs under it."""
    stack, sink = traced.stack, traced.sink
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
        ended = any(s.name == traced.workflow for s in spans) and any(s.name == "wait for an answer" for s in spans)
        return spans if ended else None

    spans = await eventually(exported, timeout=30)
    [workflow] = [s for s in spans if s.name == traced.workflow]
    [approval] = [s for s in spans if s.name == "wait for approval"]
    [question] = [s for s in spans if s.name == "wait for an answer"]
    for wait in (approval, question):
        # Under the task's span, as its work is (issue 16), lasting as long as the person took.
        assert wait.service == "gateway" and wait.parent_id == workflow.span_id, render(spans)
        assert wait.attributes["aether.waited_s"] >= 1.0
        assert abs((wait.end_ns - wait.start_ns) / 1e9 - wait.attributes["aether.waited_s"]) < 0.01
    assert question.attributes["aether.subtask.id"] == "ask" and question.attributes["aether.question.number"] == 1
    [approve] = [s for s in spans if s.name == "approve"]
    [answer] = [s for s in spans if s.name == "answer"]
    assert approve.attributes["aether.waited_s"] >= 1.0 and answer.attributes["aether.waited_s"] >= 1.0
    # The expert's resumed run is a unit of work of the same task, saying how long it waited.
    [resumed] = [s for s in spans if s.name.startswith("invoke_agent") and s.attributes.get("aether.resumed")]
    assert resumed.attributes["aether.subtask.id"] == "ask" and resumed.attributes["aether.waited_s"] >= 1.0
