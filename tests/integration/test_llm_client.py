"""The LLM client against a real OpenAI-compatible HTTP server (the simulator)."""

import asyncio
import json

import pytest
from openai import AsyncOpenAI

from aether_contracts.state import Usage
from aether_core.llm import LLMCallError, LLMClient, LLMConfig, aether_headers


def client(simulator, **overrides) -> LLMClient:
    config = LLMConfig(base_url=simulator.base_url, api_key="test", backoff_base_s=0.01, backoff_max_s=0.05, **overrides)
    return LLMClient(config)


def messages(sim: str = "", subtask: str = "s1") -> list[dict]:
    return [
        {"role": "system", "content": "You are an expert."},
        {"role": "user", "content": f"<task>\nT\n</task>\n\nYour subtask ({subtask}): build it [[sim {sim}]]"},
    ]


async def test_every_request_carries_the_attribution_headers_and_usage(simulator):
    llm = client(simulator)
    reply = await llm.chat(
        messages(), model="m1", headers=aether_headers("expert", "task-h", "s1", "python-backend")
    )
    assert "Simulated result" in reply.text
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0 and reply.usage.calls == 1
    [recorded] = simulator.requests(task_id="task-h")
    headers = recorded["headers"]
    assert headers["x-aether-role"] == "expert"
    assert headers["x-aether-task-id"] == "task-h"
    assert headers["x-aether-subtask-id"] == "s1"
    assert headers["x-aether-agent-type"] == "python-backend"
    assert recorded["model"] == "m1"


async def test_429_with_retry_after_and_5xx_are_retried_visibly(simulator):
    llm = client(simulator)
    retries = []
    reply = await llm.chat(
        messages("fail=429 times=2"),
        model="m",
        headers=aether_headers("expert", "task-429", "s1", "fullstack"),
        on_retry=lambda attempt, wait, reason: retries.append((attempt, wait, reason)),
    )
    assert reply.attempts == 3
    assert [r[0] for r in retries] == [1, 2]
    assert retries[0][1] == 0  # the simulator's Retry-After: 0 was honoured over our backoff
    assert "HTTP 429" in retries[0][2]

    reply = await llm.chat(messages("fail=503 times=1"), model="m", headers=aether_headers("expert", "task-503", "s1"))
    assert reply.attempts == 2


async def test_a_client_error_is_not_retried(simulator):
    llm = client(simulator)
    with pytest.raises(LLMCallError) as failed:
        await llm.chat(messages("fail=400"), model="m", headers=aether_headers("expert", "task-400", "s1"))
    assert not failed.value.retryable and failed.value.status == 400
    assert len(simulator.requests(task_id="task-400")) == 1


async def test_retries_stop_at_the_attempt_limit_with_a_clear_reason(simulator):
    llm = client(simulator, max_attempts=3)
    with pytest.raises(LLMCallError) as failed:
        await llm.chat(messages("fail=500"), model="m", headers=aether_headers("expert", "task-500", "s1"))
    assert failed.value.retryable
    assert "gave up after 3 attempt(s)" in str(failed.value) and "HTTP 500" in str(failed.value)
    assert len(simulator.requests(task_id="task-500")) == 3


async def test_an_unreachable_endpoint_fails_within_the_budget():
    llm = LLMClient(LLMConfig(base_url="http://127.0.0.1:9/v1", api_key="x", retry_budget_s=0.5, backoff_base_s=0.05))
    with pytest.raises(LLMCallError, match="unreachable"):
        await llm.chat(messages(), model="m", headers=aether_headers("planner", "t"))


async def test_an_empty_reply_is_an_error(simulator):
    llm = client(simulator, max_attempts=2)
    with pytest.raises(LLMCallError, match="empty reply"):
        await llm.chat(messages("empty=1"), model="m", headers=aether_headers("expert", "task-empty", "s1"))


async def test_json_mode_plans_and_streaming_speak_the_openai_protocol(simulator):
    raw = AsyncOpenAI(base_url=simulator.base_url, api_key="x")
    completion = await raw.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "types:\n- database-expert: DB\n- python-backend: API\n"},
            {"role": "user", "content": "<task>\nBuild a FastAPI service with a postgres schema\n</task>"},
        ],
        response_format={"type": "json_object"},
        extra_headers={"X-Aether-Role": "planner", "X-Aether-Task-Id": "task-json"},
    )
    plan = json.loads(completion.choices[0].message.content)
    assert [s["agent_type"] for s in plan["subtasks"]] == ["database-expert", "python-backend"]
    assert plan["subtasks"][1]["depends_on"] == ["subtask-1"]

    stream = await raw.chat.completions.create(
        model="m", messages=messages(), stream=True, stream_options={"include_usage": True},
        extra_headers={"X-Aether-Role": "expert", "X-Aether-Task-Id": "task-stream"},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert "Simulated result" in text and usage is not None and usage.total_tokens > 0


# -- real servers' behaviour (issue 12): streaming, limits, formats, honest counts -------------


@pytest.fixture(scope="module")
def slow_server():
    """Generates 400 tokens a second, as a small local model does, and serves any number at once."""
    from tests.support.simulator import SimulatorServer

    server = SimulatorServer(tokens_per_s=400).start()
    yield server
    server.stop()


async def test_a_cancel_closes_the_stream_so_the_server_stops_and_the_tokens_count(slow_server):
    llm = client(slow_server)
    spent = Usage()
    call = asyncio.create_task(
        llm.chat(messages("long=4000", subtask="c1"), model="m", headers=aether_headers("expert", "task-cancel", "c1"), usage=spent)
    )
    await asyncio.sleep(1.0)  # some 400 of at least 4,000 tokens are out
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.5)
    [recorded] = slow_server.requests(task_id="task-cancel")
    assert recorded["stream"] and recorded["status"] == 499  # the server saw the client go
    assert spent.calls == 1 and 0 < spent.estimated_tokens == spent.total_tokens
    assert spent.completion_tokens < 4000  # what came before the cancel, not the whole reply


async def test_a_timeout_mid_stream_stops_the_server_counts_the_tokens_and_is_retried(slow_server):
    llm = client(slow_server, timeout_s=1.0, max_attempts=2)
    spent = Usage()
    with pytest.raises(LLMCallError, match="timed out") as failed:
        await llm.chat(messages("long=4000", subtask="t1"), model="m", headers=aether_headers("expert", "task-timeout", "t1"), usage=spent)
    await asyncio.sleep(0.5)
    recorded = slow_server.requests(task_id="task-timeout")
    assert [r["status"] for r in recorded] == [499, 499]
    assert spent.calls == 2 and spent.estimated_tokens > 0
    assert failed.value.usage.total_tokens == spent.total_tokens


async def test_max_tokens_is_sent_and_a_cut_off_reply_is_continued_visibly(simulator):
    llm = client(simulator)
    notes = []
    reply = await llm.chat(
        messages("long=600", subtask="l1"), model="m", headers=aether_headers("expert", "task-length", "l1"),
        max_tokens=400, on_note=notes.append,
    )
    sent = simulator.requests(task_id="task-length")
    assert [r["status"] for r in sent] == [200, 200] and reply.continuations == 1
    assert "continuing (1/2)" in notes[0] and "max_tokens=400" in notes[0]
    assert sent[1]["messages"][-2]["role"] == "assistant" and "Continue exactly where it stopped" in sent[1]["messages"][-1]["content"]
    assert reply.usage.calls == 2 and reply.finish_reason == "stop"
    assert reply.text.startswith("> **Simulated result.**") and len(reply.text) > 400 * 4

    short = client(simulator, max_continuations=1)
    with pytest.raises(LLMCallError, match="still cut off at the length limit") as failed:
        await short.chat(messages("long=2000", subtask="l2"), model="m", headers=aether_headers("expert", "task-length-2", "l2"), max_tokens=100)
    assert not failed.value.retryable and failed.value.usage.calls == 2


@pytest.mark.parametrize(
    ("structured", "asked", "statuses", "output"),
    [
        ("schema", ["json_schema"], [200], "json_schema"),
        ("llama", ["json_schema", "json_object"], [500, 200], "json_object_schema"),
        ("json", ["json_schema", "json_object"], [400, 200], "json_object_schema"),
        ("text", ["json_schema", "json_object", "json_object", None], [400, 400, 400, 200], "text"),
    ],
)
async def test_structured_output_degrades_to_what_the_server_takes_and_is_remembered(structured, asked, statuses, output):
    from tests.support.simulator import SimulatorServer

    server = SimulatorServer(structured=structured).start()
    try:
        llm = client(server)
        schema = {"name": "plan", "schema": {"type": "object", "properties": {}, "additionalProperties": True}}
        plan = [{"role": "system", "content": "types:\n- fullstack: F\n"}, {"role": "user", "content": "<task>\nBuild a thing\n</task>"}]
        for task in ("task-f1", "task-f2"):
            reply = await llm.chat(plan, model="m", headers=aether_headers("planner", task), schema=schema)
            assert json.loads(reply.text)["subtasks"]
        first = [(r["status"], _format(r)) for r in server.requests(task_id="task-f1")]
        second = [(r["status"], _format(r)) for r in server.requests(task_id="task-f2")]
    finally:
        server.stop()
    assert [f for _, f in first] == asked and [s for s, _ in first] == statuses
    assert second == [(200, asked[-1])]  # remembered: no second refusal
    assert reply.output_format == output


def _format(recorded: dict) -> str | None:
    return (recorded["body"].get("response_format") or {}).get("type")


async def test_a_refused_request_costs_no_tokens_but_a_failed_stream_does(simulator):
    llm = client(simulator, max_attempts=3)
    spent = Usage()
    reply = await llm.chat(messages("fail=503 times=2", subtask="r1"), model="m", headers=aether_headers("expert", "task-refused", "r1"), usage=spent)
    assert spent.calls == 3 and reply.usage.calls == 3
    assert spent.total_tokens == reply.usage.total_tokens > 0 and spent.estimated_tokens == 0  # the server said


async def test_the_endpoint_limit_holds_across_clients_as_across_processes(simulator, nats_server):
    import nats

    from aether_core.llm_slots import limit_concurrency

    simulator.reset()
    connection = await nats.connect(nats_server.url)
    js = connection.jetstream()
    from aether_core import declare

    await declare.ensure_topology(js)
    clients = [client(simulator) for _ in range(3)]  # three processes' clients, one endpoint
    for llm in clients:
        await limit_concurrency(llm, js, simulator.base_url, 1)
    calls = [
        llm.chat(messages("latency_ms=300", subtask=f"p{n}"), model="m", headers=aether_headers("expert", "task-slots", f"p{n}"))
        for n, llm in enumerate(clients * 2)
    ]
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*calls)
    took = asyncio.get_running_loop().time() - started
    await connection.close()
    assert simulator.stats()["max_in_flight"] == 1
    assert took >= 6 * 0.3  # one at a time: the calls waited in Aether, not at the server


async def test_a_server_without_function_calling_is_asked_without_tools_from_then_on():
    from tests.support.simulator import SimulatorServer

    server = SimulatorServer(tools=False).start()
    try:
        llm = client(server)
        tools = [{"type": "function", "function": {"name": "noop", "description": "x", "parameters": {"type": "object", "properties": {}}}}]
        for task in ("task-t1", "task-t2"):
            reply = await llm.chat(messages(subtask="n1"), model="m", headers=aether_headers("expert", task, "n1"), tools=tools)
            assert "Simulated result" in reply.text and not reply.tool_calls
        first = [(r["status"], "tools" in r["body"]) for r in server.requests(task_id="task-t1")]
        second = [(r["status"], "tools" in r["body"]) for r in server.requests(task_id="task-t2")]
    finally:
        server.stop()
    assert first == [(400, True), (200, False)] and second == [(200, False)]
