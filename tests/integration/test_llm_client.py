"""The LLM client against a real OpenAI-compatible HTTP server (the simulator)."""

import json

import pytest
from openai import AsyncOpenAI

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
