"""LLM access through the `openai` package, for any OpenAI-compatible server.

Every call is streamed (`stream_options.include_usage`), so a cancel, a timeout or a budget stop
closes the connection and the server stops generating, instead of finishing a reply nobody reads
while the retry queues behind it. Every attempt's tokens are counted, the failed and abandoned
ones included: from the usage the server streamed, or, when it never came (the stream was cut),
estimated from the characters sent and received and counted in `Usage.estimated_tokens`. The
caller's `usage` accumulator receives them as they happen, so even a call that is cancelled
mid-stream leaves its tokens behind.

Replies are bounded: `max_tokens` is sent on every request (the caller caps it by the task's
remaining budget), and a reply that stops at the limit (`finish_reason: length`) is continued in
a new request, visibly (`on_note`), at most `max_continuations` times, then fails: a cut-off
reply is never taken as complete.

Structured output: a JSON Schema (`schema=`) is sent as `response_format: json_schema` (strict);
a server that refuses it (a 400, or llama-cpp-python's 500 naming `response_format`) is asked
with JSON mode and the schema beside it, then plain JSON mode, then plain text, and what each
model accepts is remembered for the process's life. The caller parses leniently either way.

Every request carries `X-Aether-*` headers so an LLM gateway can attribute cost. 429, 5xx,
timeouts and connection errors are retried with exponential backoff and full jitter, honouring
`Retry-After` (or `retry-after-ms`), until `max_attempts` or the retry budget runs out; every other
error fails at once. The openai client's own retries are off, so each retry is visible to the
caller (`on_retry`), which records it in the task's log. A per-endpoint limit on calls in flight
(`slots`, shared by every process through NATS) makes calls wait in Aether, not in the socket of
a server that serves one request at a time.

Every attempt is a span following the OpenTelemetry GenAI conventions (`chat <model>`, with the
model, the tokens, the finish reason and the agent; the messages only on opt-in) when tracing is
on, and is counted in Prometheus either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib
import inspect
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import openai
from openai import AsyncOpenAI
from opentelemetry.trace import SpanKind

from aether_contracts.state import Usage

from . import metrics, telemetry

if TYPE_CHECKING:
    from openai import AsyncStream
    from openai.types.chat import ChatCompletionChunk

log = logging.getLogger("aether.llm")


def _http_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """The transport and timeout errors of the HTTP client the `openai` package uses (`httpx2`
    in openai 3, `httpx` before): a stream can break off half-way with one of them."""
    transport: list[type[BaseException]] = []
    timeouts: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        transport.append(module.TransportError)
        timeouts.append(module.TimeoutException)
    return tuple(transport), tuple(timeouts)


TRANSPORT_ERRORS, TIMEOUT_ERRORS = _http_errors()
ATTEMPT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APITimeoutError, openai.APIConnectionError, TimeoutError, *TRANSPORT_ERRORS, openai.APIError
)
"""What ends one attempt of a call short (timeouts, the transport, a stream's error event)."""

Role = Literal["planner", "expert", "synthesizer"]
RetryHook = Callable[[int, float, str], Awaitable[None] | None]
NoteHook = Callable[[str], Awaitable[None] | None]
Message = dict[str, Any]

OUTPUT_FORMATS = ("json_schema", "json_object_schema", "json_object", "text")
"""What a server may accept for structured output, best first: OpenAI's `json_schema`; JSON mode
with the schema beside it (`{"type": "json_object", "schema": ...}`, how llama-cpp-python's
server forces a schema, which it refuses as `json_schema`); plain JSON mode; nothing."""
CONTINUE_PROMPT = (
    "Your reply stopped at the length limit. Continue exactly where it stopped: no repetition, "
    "no preamble, no closing remarks about the cut."
)


@dataclass(frozen=True)
class LLMConfig:
    base_url: str | None
    api_key: str
    timeout_s: float = 120.0
    max_attempts: int = 6
    retry_budget_s: float = 300.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_continuations: int = 2


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str
    """The arguments as the model wrote them (JSON text, perhaps not valid: the caller checks)."""


@dataclass
class LLMReply:
    text: str
    usage: Usage
    """Every attempt and continuation of this call."""
    model: str
    attempts: int
    latency_s: float
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    continuations: int = 0
    output_format: str = "text"
    """How the reply was asked for: `json_schema`, `json_object` or `text`."""


class LLMCallError(Exception):
    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, usage: Usage | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.usage = usage or Usage()
        """What the failed call spent, every attempt included."""


class Slots(Protocol):
    """A limit on the calls in flight to one endpoint (see `aether_core.llm_slots`)."""

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]: ...


class _Unlimited:
    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        yield


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


def estimate_tokens(text: str) -> int:
    """About four characters a token, as OpenAI's rule of thumb: for budgets and for attempts
    whose usage the server never sent."""
    return math.ceil(len(text) / 4) if text else 0


def estimate_prompt_tokens(messages: Sequence[Message], tools: Sequence[dict] | None = None) -> int:
    chars = sum(len(str(m.get("content") or "")) + len(json.dumps(m.get("tool_calls") or "")) for m in messages)
    if tools:
        chars += len(json.dumps(list(tools)))
    return math.ceil(chars / 4) + 4 * len(messages)


async def _call(hook: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if hook is None:
        return
    outcome = hook(*args)
    if inspect.isawaitable(outcome):
        await outcome


class _Attempt:
    """What one streamed request brought back, however it ended."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None
        self.usage: Any = None
        self.model: str | None = None
        self.response_id: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def take(self, chunk: Any) -> None:
        self.model = chunk.model or self.model
        self.response_id = chunk.id or self.response_id
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    self.parts.append(delta.content)
                for call in delta.tool_calls or ():
                    slot = self.calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    if call.id:
                        slot["id"] = call.id
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                self.finish = choice.finish_reason

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in sorted(self.calls.items())
        ]

    def spent(self, prompt_estimate: int, *, refused: bool = False) -> Usage:
        """This attempt's tokens: the server's count, else an estimate (marked so). A request
        the server refused with an HTTP error before it streamed anything cost it nothing."""
        if refused and self.usage is None and not self.parts and not self.calls:
            return Usage(calls=1)
        if self.usage is not None:
            prompt = self.usage.prompt_tokens or 0
            completion = self.usage.completion_tokens or 0
            return Usage(
                calls=1, prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=self.usage.total_tokens or prompt + completion,
            )
        completion = estimate_tokens(self.text) + estimate_tokens(json.dumps(self.calls)) if self.calls else estimate_tokens(self.text)
        total = prompt_estimate + completion
        return Usage(calls=1, prompt_tokens=prompt_estimate, completion_tokens=completion, total_tokens=total, estimated_tokens=total)


class LLMClient:
    def __init__(self, config: LLMConfig, *, client: AsyncOpenAI | None = None, slots: Slots | None = None) -> None:
        self.config = config
        self.client = client or AsyncOpenAI(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )
        self.slots: Slots = slots or _Unlimited()
        url = self.client.base_url
        self._server = {telemetry.SERVER_ADDRESS: url.host, telemetry.SERVER_PORT: url.port}
        self.formats: dict[str, str] = {}
        """Per model, the best structured-output format the server accepted (or was left at)."""
        self.stream_usage = True
        """False once the server refused `stream_options` (usage is then estimated)."""
        self.no_tools: set[str] = set()
        """Models whose server refused `tools` (their experts then answer in one reply)."""

    async def close(self) -> None:
        await self.client.close()

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        headers: dict[str, str],
        json_mode: bool = False,
        schema: dict[str, Any] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        usage: Usage | None = None,
        on_retry: RetryHook | None = None,
        on_note: NoteHook | None = None,
        deadline: float | None = None,
        agent_name: str | None = None,
        agent_id: str | None = None,
    ) -> LLMReply:
        """One chat completion, retried within the budget and continued past the length limit.

        `schema` is `{"name": ..., "schema": {...}}` for structured output (implies JSON);
        `tools` are OpenAI function tools; `max_tokens` bounds each request's reply; `usage`
        accumulates what every attempt spends, as it is spent. `deadline` is a
        `time.monotonic()`. `agent_name` and `agent_id` name the agent making the call in its
        spans; the task, subtask, role and agent type come from `headers`.
        """
        spent = Usage()
        started = time.monotonic()
        transcript = list(messages)
        text, continuations, reply = "", 0, None
        while True:
            try:
                reply = await self._complete(
                    transcript, model=model, headers=headers, json_mode=json_mode, schema=schema,
                    tools=tools, max_tokens=max_tokens, spent=spent, usage=usage, on_retry=on_retry,
                    deadline=deadline, agent_name=agent_name, agent_id=agent_id, started=started,
                )
            except LLMCallError as exc:
                exc.usage = spent
                raise
            text += reply.text
            if reply.finish_reason != "length" or reply.output_format != "text":
                # A structured reply cannot be continued (a schema would start a new object):
                # it comes back with `finish_reason: length` for the caller to repair.
                break
            if reply.tool_calls:
                raise LLMCallError(
                    f"the reply was cut off at the length limit (max_tokens={max_tokens}) inside a tool call",
                    retryable=False, usage=spent,
                )
            if continuations >= self.config.max_continuations:
                raise LLMCallError(
                    f"the reply was still cut off at the length limit (max_tokens={max_tokens}) after "
                    f"{continuations} continuation(s): not taken as complete",
                    retryable=False, usage=spent,
                )
            continuations += 1
            await _call(on_note, f"reply cut off at the length limit (max_tokens={max_tokens}); continuing ({continuations}/{self.config.max_continuations})")
            transcript = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": CONTINUE_PROMPT}]
        if not text.strip() and not reply.tool_calls:
            raise LLMCallError(
                f"the LLM returned an empty reply (finish reason: {reply.finish_reason})", retryable=True, usage=spent
            )
        reply.text, reply.usage, reply.continuations = text, spent, continuations
        reply.latency_s = time.monotonic() - started
        return reply

    async def _complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        headers: dict[str, str],
        json_mode: bool,
        schema: dict[str, Any] | None,
        tools: Sequence[dict[str, Any]] | None,
        max_tokens: int | None,
        spent: Usage,
        usage: Usage | None,
        on_retry: RetryHook | None,
        deadline: float | None,
        agent_name: str | None,
        agent_id: str | None,
        started: float,
    ) -> LLMReply:
        cfg = self.config
        role = headers.get("X-Aether-Role", "unknown")
        wanted = "json_schema" if schema is not None else "json_object" if json_mode else "text"
        budget_end = started + cfg.retry_budget_s
        if deadline is not None:
            budget_end = min(budget_end, deadline)
        prompt_estimate = estimate_prompt_tokens(messages, tools)
        # Prompts are only on spans on request (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT).
        sent_messages = telemetry.content_json(messages) if telemetry.capturing() else None
        attempt = 0
        while True:
            attempt += 1
            output = self._format(model, wanted)
            offered = tools if tools and model not in self.no_tools else None
            kwargs = self._request(output, schema, offered, max_tokens)
            timeout = max(1.0, min(cfg.timeout_s, budget_end - time.monotonic()))
            sent = time.monotonic()
            attributes = self._span_attributes(model, headers, output, agent_name, agent_id, max_tokens)
            result = _Attempt()
            with telemetry.span(f"chat {model}", attributes, kind=SpanKind.CLIENT) as span:
                telemetry.set_attributes(span, {telemetry.ATTEMPT: attempt, telemetry.GEN_AI_INPUT_MESSAGES: sent_messages})
                try:
                    async with self.slots.hold():
                        await self._stream(messages, model, headers, kwargs, timeout, result)
                except openai.APIStatusError as exc:
                    if exc.status_code in (400, 422, 500) and self._downgrade(model, output, exc, bool(offered)):
                        self._account(result, prompt_estimate, spent, usage, role, model, f"{exc.status_code}", sent, span)
                        attempt -= 1  # not a failure of the call: the server told us what it takes
                        continue
                    retryable = exc.status_code == 429 or exc.status_code >= 500
                    reason = f"HTTP {exc.status_code}: {_short(exc.message)}"
                    self._account(result, prompt_estimate, spent, usage, role, model, str(exc.status_code), sent, span, reason)
                    if not retryable:
                        log.warning("LLM %s call for task %s refused: %s", role, headers.get("X-Aether-Task-Id"), reason)
                        raise LLMCallError(
                            f"the LLM refused the request ({reason})", retryable=False, status=exc.status_code
                        ) from exc
                    wait = retry_after_s(exc.response.headers)
                    status: int | None = exc.status_code
                except ATTEMPT_ERRORS as exc:
                    # A stream can also break off half-way (the server died, or sent an error event).
                    timed_out = isinstance(exc, (TimeoutError, openai.APITimeoutError, *TIMEOUT_ERRORS))
                    kind = "timed out" if timed_out else "unreachable" if isinstance(exc, openai.APIConnectionError) else "failed mid-reply"
                    reason = f"LLM endpoint {kind}: {_short(str(exc) or type(exc).__name__)}"
                    error_type = "timeout" if timed_out else type(exc).__name__
                    self._account(result, prompt_estimate, spent, usage, role, model, error_type, sent, span, reason)
                    wait, status = None, None
                except BaseException:
                    # Cancelled (the task was, or the agent hands its work back): the stream is
                    # closed; what it spent is counted before the cancellation goes on.
                    self._account(result, prompt_estimate, spent, usage, role, model, "cancelled", sent, span, "cancelled")
                    raise
                else:
                    this = self._account(result, prompt_estimate, spent, usage, role, model, "ok", sent, span)
                    if span is not None:
                        telemetry.set_attributes(span, _response_attributes(result, this))
                        if sent_messages is not None:
                            replied = telemetry.reply_json(result.text, result.tool_calls(), result.finish)
                            telemetry.set_attributes(span, {telemetry.GEN_AI_OUTPUT_MESSAGES: replied})
                    return LLMReply(
                        text=result.text,
                        usage=this,
                        model=result.model or model,
                        attempts=attempt,
                        latency_s=time.monotonic() - started,
                        finish_reason=result.finish,
                        tool_calls=result.tool_calls(),
                        output_format=output,
                    )

            if wait is None:
                wait = backoff_s(attempt, cfg.backoff_base_s, cfg.backoff_max_s)
            remaining = budget_end - time.monotonic()
            if attempt >= cfg.max_attempts or wait >= remaining:
                message = f"gave up after {attempt} attempt(s) in {time.monotonic() - started:.1f}s; last error: {reason}"
                log.warning("LLM %s call for task %s %s", role, headers.get("X-Aether-Task-Id"), message)
                raise LLMCallError(message, retryable=True, status=status)
            await _call(on_retry, attempt, wait, reason)
            await asyncio.sleep(wait)

    async def _stream(
        self, messages: Sequence[Message], model: str, headers: dict[str, str], kwargs: dict[str, Any],
        timeout: float, result: _Attempt,
    ) -> None:
        """Stream one reply into `result`; however this ends, the connection is closed."""
        stream: AsyncStream[ChatCompletionChunk] | None = None
        try:
            async with asyncio.timeout(timeout):
                # `stream=True` makes it a stream; the overloads cannot tell with `**kwargs` beside it.
                stream = cast("AsyncStream[ChatCompletionChunk]", await self.client.chat.completions.create(
                    model=model,
                    messages=list(messages),  # type: ignore[arg-type]
                    extra_headers=headers,
                    timeout=timeout,
                    stream=True,
                    **kwargs,
                ))
                async for chunk in stream:
                    result.take(chunk)
        finally:
            if stream is not None:
                # A cancel or a timeout lands here too: closing the response is what tells the
                # server to stop generating.
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.close())

    def _request(
        self, output: str, schema: dict[str, Any] | None, tools: Sequence[dict[str, Any]] | None, max_tokens: int | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if tools:
            kwargs["tools"] = list(tools)
        if output == "json_schema" and schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.get("name", "reply"), "schema": schema["schema"], "strict": True},
            }
        elif output == "json_object_schema" and schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema["schema"]}
        elif output in ("json_object", "json_object_schema"):
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    def _format(self, model: str, wanted: str) -> str:
        known = self.formats.get(model, "json_schema")
        return OUTPUT_FORMATS[max(OUTPUT_FORMATS.index(wanted), OUTPUT_FORMATS.index(known))]

    def _downgrade(self, model: str, output: str, exc: openai.APIStatusError, tools: bool = False) -> bool:
        """The server refused a part of the request it does not support: remember, ask without it."""
        message = (exc.message or "").lower() + " " + str(getattr(exc, "body", "") or "").lower()
        if tools and "tool" in message:
            # No function calling here: the expert answers in one reply (its files in code blocks).
            self.no_tools.add(model)
            log.warning("the LLM server refused tools for model %s (%s): experts answer in one reply", model, _short(exc.message, 120))
            return True
        if self.stream_usage and "stream_options" in message and exc.status_code != 500:
            self.stream_usage = False
            log.warning("the LLM server does not take stream_options: token counts will be estimated")
            return True
        if output == "text" or ("response_format" not in message and (
            exc.status_code == 500 or not any(w in message for w in ("json_schema", "json_object", "schema", "not supported", "unsupported"))
        )):
            return False
        lower = OUTPUT_FORMATS[OUTPUT_FORMATS.index(output) + 1]
        self.formats[model] = lower
        log.warning("the LLM server refused %s for model %s (%s): asking with %s from now on", output, model, _short(exc.message, 120), lower)
        return True

    def _account(
        self, result: _Attempt, prompt_estimate: int, spent: Usage, usage: Usage | None, role: str, model: str,
        outcome: str, sent: float, span: Any, reason: str | None = None,
    ) -> Usage:
        this = result.spent(prompt_estimate, refused=outcome.isdigit())
        spent.add(this)
        if usage is not None:
            usage.add(this)
        metrics.record_llm_request(role, model, outcome, time.monotonic() - sent, this.prompt_tokens, this.completion_tokens)
        if reason is not None:
            telemetry.set_error(span, outcome, reason)
        return this

    def _span_attributes(
        self,
        model: str,
        headers: dict[str, str],
        output: str,
        agent_name: str | None,
        agent_id: str | None,
        max_tokens: int | None,
    ) -> dict[str, Any] | None:
        if not telemetry.enabled():
            return None
        return {
            telemetry.GEN_AI_OPERATION: "chat",
            telemetry.GEN_AI_PROVIDER: telemetry.PROVIDER,
            telemetry.GEN_AI_REQUEST_MODEL: model,
            telemetry.GEN_AI_OUTPUT_TYPE: "json" if output != "text" else "text",
            telemetry.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
            telemetry.GEN_AI_AGENT_NAME: agent_name,
            telemetry.GEN_AI_AGENT_ID: agent_id,
            telemetry.ROLE: headers.get("X-Aether-Role"),
            telemetry.TASK_ID: headers.get("X-Aether-Task-Id"),
            telemetry.SUBTASK_ID: headers.get("X-Aether-Subtask-Id"),
            telemetry.AGENT_TYPE: headers.get("X-Aether-Agent-Type"),
            **self._server,
        }


def _response_attributes(result: _Attempt, usage: Usage) -> dict[str, Any]:
    return {
        telemetry.GEN_AI_RESPONSE_MODEL: result.model,
        telemetry.GEN_AI_RESPONSE_ID: result.response_id,
        telemetry.GEN_AI_FINISH_REASONS: [result.finish] if result.finish else None,
        telemetry.GEN_AI_INPUT_TOKENS: usage.prompt_tokens,
        telemetry.GEN_AI_OUTPUT_TOKENS: usage.completion_tokens,
    }


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
