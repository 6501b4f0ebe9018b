"""LLM access through the `openai` package, for any OpenAI-compatible server.

Every request carries `X-Aether-*` headers so an LLM gateway can attribute cost. 429, 5xx, timeouts
and connection errors are retried with exponential backoff and full jitter, honouring
`Retry-After` (or `retry-after-ms`), until `max_attempts` or the retry budget runs out; every other
error fails at once. The openai client's own retries are off, so each retry is visible to the
caller (`on_retry`), which records it in the task's log.

Every attempt is a span following the OpenTelemetry GenAI conventions (`chat <model>`, with the
model, the tokens and the agent) when tracing is on, and is counted in Prometheus either way.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai
from openai import AsyncOpenAI
from opentelemetry.trace import SpanKind

from aether_contracts.state import Usage

from . import metrics, telemetry

Role = Literal["planner", "expert", "synthesizer"]
RetryHook = Callable[[int, float, str], Awaitable[None] | None]


@dataclass(frozen=True)
class LLMConfig:
    base_url: str | None
    api_key: str
    timeout_s: float = 120.0
    max_attempts: int = 6
    retry_budget_s: float = 300.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0


@dataclass
class LLMReply:
    text: str
    usage: Usage
    model: str
    attempts: int
    latency_s: float


class LLMCallError(Exception):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def aether_headers(
    role: Role,
    task_id: str,
    subtask_id: str | None = None,
    agent_type: str | None = None,
) -> dict[str, str]:
    headers = {"X-Aether-Role": role, "X-Aether-Task-Id": task_id}
    if subtask_id is not None:
        headers["X-Aether-Subtask-Id"] = subtask_id
    if agent_type is not None:
        headers["X-Aether-Agent-Type"] = agent_type
    return headers


def retry_after_s(headers: Any) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After`."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def backoff_s(attempt: int, base: float, cap: float) -> float:
    return random.uniform(0.5, 1.0) * min(cap, base * 2 ** (attempt - 1))


class LLMClient:
    def __init__(self, config: LLMConfig, *, client: AsyncOpenAI | None = None) -> None:
        self.config = config
        self.client = client or AsyncOpenAI(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )
        url = self.client.base_url
        self._server = {telemetry.SERVER_ADDRESS: url.host, telemetry.SERVER_PORT: url.port}

    async def close(self) -> None:
        await self.client.close()

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        model: str,
        headers: dict[str, str],
        json_mode: bool = False,
        on_retry: RetryHook | None = None,
        deadline: float | None = None,
        agent_name: str | None = None,
        agent_id: str | None = None,
    ) -> LLMReply:
        """One chat completion, retried within the budget. `deadline` is a `time.monotonic()`.

        `agent_name` and `agent_id` name the agent making the call in its spans (GenAI
        `gen_ai.agent.*`); the task, subtask, role and agent type come from `headers`.
        """
        cfg = self.config
        role = headers.get("X-Aether-Role", "unknown")
        attributes = self._span_attributes(model, headers, json_mode, agent_name, agent_id)
        started = time.monotonic()
        budget_end = started + cfg.retry_budget_s
        if deadline is not None:
            budget_end = min(budget_end, deadline)
        kwargs: dict[str, Any] = {}
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        attempt = 0
        while True:
            attempt += 1
            timeout = max(1.0, min(cfg.timeout_s, budget_end - time.monotonic()))
            sent = time.monotonic()
            with telemetry.span(f"chat {model}", attributes, kind=SpanKind.CLIENT) as span:
                telemetry.set_attributes(span, {telemetry.ATTEMPT: attempt})
                try:
                    response = await self.client.chat.completions.create(
                        model=model,
                        messages=list(messages),  # type: ignore[arg-type]
                        extra_headers=headers,
                        timeout=timeout,
                        **kwargs,
                    )
                except openai.APIStatusError as exc:
                    retryable = exc.status_code == 429 or exc.status_code >= 500
                    reason = f"HTTP {exc.status_code}: {_short(exc.message)}"
                    metrics.record_llm_request(role, model, str(exc.status_code), time.monotonic() - sent)
                    telemetry.set_error(span, str(exc.status_code), reason)
                    if not retryable:
                        raise LLMCallError(
                            f"the LLM refused the request ({reason})",
                            retryable=False,
                            status=exc.status_code,
                        ) from exc
                    wait = retry_after_s(exc.response.headers)
                    status: int | None = exc.status_code
                except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                    kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "unreachable"
                    reason = f"LLM endpoint {kind}: {_short(str(exc))}"
                    error_type = "timeout" if kind == "timed out" else type(exc).__name__
                    metrics.record_llm_request(role, model, error_type, time.monotonic() - sent)
                    telemetry.set_error(span, error_type, reason)
                    wait, status = None, None
                else:
                    try:
                        reply = self._reply(response, model, attempt, started)
                    except LLMCallError as exc:
                        metrics.record_llm_request(role, model, "empty_reply", time.monotonic() - sent)
                        telemetry.set_error(span, "empty_reply", str(exc))
                        raise
                    metrics.record_llm_request(
                        role,
                        model,
                        "ok",
                        time.monotonic() - sent,
                        reply.usage.prompt_tokens,
                        reply.usage.completion_tokens,
                    )
                    if span is not None:
                        telemetry.set_attributes(span, _response_attributes(response, reply))
                    return reply

            if wait is None:
                wait = backoff_s(attempt, cfg.backoff_base_s, cfg.backoff_max_s)
            remaining = budget_end - time.monotonic()
            if attempt >= cfg.max_attempts or wait >= remaining:
                raise LLMCallError(
                    f"gave up after {attempt} attempt(s) in "
                    f"{time.monotonic() - started:.1f}s; last error: {reason}",
                    retryable=True,
                    status=status,
                )
            if on_retry is not None:
                outcome = on_retry(attempt, wait, reason)
                if inspect.isawaitable(outcome):
                    await outcome
            await asyncio.sleep(wait)

    def _span_attributes(
        self,
        model: str,
        headers: dict[str, str],
        json_mode: bool,
        agent_name: str | None,
        agent_id: str | None,
    ) -> dict[str, Any] | None:
        if not telemetry.enabled():
            return None
        return {
            telemetry.GEN_AI_OPERATION: "chat",
            telemetry.GEN_AI_PROVIDER: "openai",
            telemetry.GEN_AI_REQUEST_MODEL: model,
            telemetry.GEN_AI_OUTPUT_TYPE: "json" if json_mode else "text",
            telemetry.GEN_AI_AGENT_NAME: agent_name,
            telemetry.GEN_AI_AGENT_ID: agent_id,
            telemetry.ROLE: headers.get("X-Aether-Role"),
            telemetry.TASK_ID: headers.get("X-Aether-Task-Id"),
            telemetry.SUBTASK_ID: headers.get("X-Aether-Subtask-Id"),
            telemetry.AGENT_TYPE: headers.get("X-Aether-Agent-Type"),
            **self._server,
        }

    @staticmethod
    def _reply(response: Any, model: str, attempt: int, started: float) -> LLMReply:
        choice = response.choices[0] if response.choices else None
        text = choice.message.content if choice is not None else None
        if not text or not text.strip():
            finish = choice.finish_reason if choice is not None else "no choices"
            raise LLMCallError(f"the LLM returned an empty reply (finish reason: {finish})", retryable=True)
        usage = Usage(calls=1)
        if response.usage is not None:
            usage.prompt_tokens = response.usage.prompt_tokens or 0
            usage.completion_tokens = response.usage.completion_tokens or 0
            usage.total_tokens = response.usage.total_tokens or (
                usage.prompt_tokens + usage.completion_tokens
            )
        return LLMReply(
            text=text,
            usage=usage,
            model=response.model or model,
            attempts=attempt,
            latency_s=time.monotonic() - started,
        )


def _response_attributes(response: Any, reply: LLMReply) -> dict[str, Any]:
    finish = [c.finish_reason for c in (response.choices or []) if c.finish_reason]
    return {
        telemetry.GEN_AI_RESPONSE_MODEL: reply.model,
        telemetry.GEN_AI_RESPONSE_ID: response.id or None,
        telemetry.GEN_AI_FINISH_REASONS: finish or None,
        telemetry.GEN_AI_INPUT_TOKENS: reply.usage.prompt_tokens,
        telemetry.GEN_AI_OUTPUT_TOKENS: reply.usage.completion_tokens,
    }


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
