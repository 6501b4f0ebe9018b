"""Tracing for every service: OpenTelemetry, exported over OTLP, one trace per task.

Configured only by the standard `OTEL_*` variables (see `config.TelemetrySettings`). With none
set, nothing is installed: the API's no-op tracer stays, no broker middleware is added, and
`span` hands back one shared null context, so an untraced service pays a test of one global per
span site and nothing else.

How a task becomes one readable trace (issues 6 and 16). The gateway's `POST` opens the trace
and makes the context of the task's own span (`invoke_workflow`, `open_workflow`), which the task
state keeps (`TaskState.workflow_span`). Every message of the task carries that context as its
`traceparent` (the NATS middleware here, `TaskTracing`), so each service's work spans (`plan`,
`invoke_agent` for a subtask or the synthesis, `process` for the scheduler's decisions) are
children of the task's span, siblings of one another however long the chain of dependencies; what
made a unit of work start travels beside it (`aether-cause`) and becomes a span link: a subtask
links to the subtask whose end made it ready, the first ones to the plan. A publish is one
`publish <subject>` span under the work that sent it; nothing else of the messaging is traced. The
task's span itself is exported when the round ends, with its real start and end, by the service
whose write ended it (`end_workflow`, called by the task store). A retry is a new round: a new
task span under the `retry` span.

Names follow the OpenTelemetry GenAI conventions (`chat`, `execute_tool`, `invoke_agent`); with
`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`, their latest experimental operations
too (`invoke_workflow` for the task, `plan` for Jason's planning); prompts and replies only with
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`. Polling reads are not traced (`Quiet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from faststream import BaseMiddleware
from opentelemetry import context, trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aether_contracts.events import MSG_ID_HEADER
from aether_contracts.state import TaskState, TaskStatus, TraceSpan, utcnow
from aether_contracts.subjects import metric_label

from .errors import HandBack, RetryLater

if TYPE_CHECKING:
    from faststream._internal.types import BrokerMiddleware
    from opentelemetry.sdk.trace import TracerProvider

    from .config import TelemetrySettings

log = logging.getLogger("aether.telemetry")

# Aether's own span attributes; searchable as tags in Jaeger.
TASK_ID = "aether.task.id"
SUBTASK_ID = "aether.subtask.id"
AGENT_TYPE = "aether.agent.type"
ROLE = "aether.role"
ROUND = "aether.round"
ATTEMPT = "aether.llm.attempt"
DEFERRED = "aether.deferred"
"""Event on a work span whose message goes back to the queue on purpose (not an error)."""

# OpenTelemetry GenAI semantic conventions (development status; open-telemetry/semantic-conventions-genai).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_RESULT = "gen_ai.tool.call.result"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

PROVIDER = "openai"
"""`gen_ai.provider.name` of every call: Aether speaks the OpenAI protocol to whichever server."""
WORKFLOW = "aether"
"""`gen_ai.workflow.name` of a task: one workflow, whatever the task (low cardinality)."""
CONTENT_CHARS = 20_000
"""A captured message part longer than this is cut (marked), its JSON structure kept."""

CAUSE_HEADER = "aether-cause"
"""`traceparent` of the span whose end made this message (a span link on the consumer's side)."""

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_description = "off"
_latest = False
_content = False
_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext(None)
_PROPAGATOR = TraceContextTextMapPropagator()
_ANCHOR = context.create_key("aether.anchor")
"""The span the messages of this unit of work hang under: the task's, for a task's messages."""
_CAUSE_IN = context.create_key("aether.cause.in")
_CAUSE_OUT = context.create_key("aether.cause.out")
_PRESET: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("aether.preset", default=None)

UNTRACED_READS: set[str] = set()
"""Server spans (by name: `GET <route>`) that start no trace of their own: the gateway's polled
reads. A caller that sends a sampled `traceparent` still gets them in its trace."""


def enabled() -> bool:
    return _tracer is not None


def description() -> str:
    """What this process exports, for heartbeats and logs: `off` or e.g. `otlp (grpc)`."""
    return _description


def latest() -> bool:
    """`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` is set."""
    return _latest


def capturing() -> bool:
    """Message contents go on spans (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`)."""
    return _tracer is not None and _content


def setup(settings: TelemetrySettings, service: str, instance_id: str | None = None) -> bool:
    """Install the SDK and its exporters when the environment asks for tracing; else nothing.

    `service` is the default `service.name`; `OTEL_SERVICE_NAME` (or a `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`) wins, as the specification says. Once per process.
    """
    global _tracer, _provider, _description, _latest, _content
    exporters = settings.trace_exporters
    if not exporters:
        return False
    if _provider is not None:
        return True

    from opentelemetry.sdk.resources import (
        SERVICE_INSTANCE_ID,
        SERVICE_NAME,
        OTELResourceDetector,
        Resource,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from_env = OTELResourceDetector().detect().attributes
    defaults: dict[str, Any] = {}
    if SERVICE_NAME not in from_env:
        defaults[SERVICE_NAME] = service
    if instance_id and SERVICE_INSTANCE_ID not in from_env:
        defaults[SERVICE_INSTANCE_ID] = instance_id
    # The sampler (OTEL_TRACES_SAMPLER) and the batch processor (OTEL_BSP_*) read their own
    # variables; the sampler is wrapped (polled reads start no trace) before any tracer exists.
    provider = TracerProvider(resource=Resource.create(defaults), id_generator=_ids())
    provider.sampler = _quiet(provider.sampler)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("aether")
    _latest, _content = settings.genai_latest, settings.capture_content
    _description = ", ".join(
        f"otlp ({settings.otlp_protocol})" if name == "otlp" else name for name in exporters
    )
    log.info(
        "tracing on: %s; GenAI conventions: %s; message content %s", _description,
        "latest experimental" if _latest else "default", "captured" if _content else "not captured",
    )
    return True


def _exporter(name: str, settings: TelemetrySettings):
    # Endpoint, headers, certificates, compression and timeout come from OTEL_EXPORTER_OTLP_*,
    # read by the exporters themselves.
    if name == "otlp":
        if settings.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as OTLPHttpSpanExporter,
        )

        return OTLPHttpSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(
        f"OTEL_TRACES_EXPORTER names '{name}', which Aether does not ship; use otlp, console or none"
    )


def _ids():
    """Random ids, except for a span whose context was made before it started (a task's span,
    made at the `POST` and exported when the task ends)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PresetIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            preset = _PRESET.get()
            return preset[0] if preset is not None else super().generate_trace_id()

        def generate_span_id(self) -> int:
            preset = _PRESET.get()
            return preset[1] if preset is not None else super().generate_span_id()

    return PresetIds()


def _quiet(delegate):
    """The configured sampler, except that a polled read (`UNTRACED_READS`) starts no trace:
    a board or a CLI polling a task would otherwise fill the trace list with one-span traces."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class Quiet(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                          trace_state=None) -> SamplingResult:
            if (
                kind == SpanKind.SERVER
                and name in UNTRACED_READS
                and not trace.get_current_span(parent_context).get_span_context().is_valid
            ):
                return SamplingResult(Decision.DROP)
            return delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"Quiet{{{delegate.get_description()}}}"

    return Quiet()


# -- Messages over NATS -----------------------------------------------------------------------


class TaskTracing(BaseMiddleware):
    """Trace context over NATS, for the shape of trace described above (FastStream's own
    telemetry middleware nests every consumer under its producer, three spans per hop).

    Consuming: the message's `traceparent` (for a task's message, the task's span) becomes the
    parent of whatever the handler traces, and is passed on by what it publishes; `aether-cause`
    is kept for the handler's work span to link to. No span is made here: the handler's work
    span is the message's processing. Publishing: one producer span under the current span,
    nothing at all outside a trace (the pool's agent events, for one).
    """

    async def consume_scope(self, call_next, msg):
        headers = msg.headers or {}
        found = _PROPAGATOR.extract(headers)
        anchor = trace.get_current_span(found).get_span_context()
        if anchor.is_valid:
            found = context.set_value(_ANCHOR, anchor, found)
            if (cause := _parse(headers.get(CAUSE_HEADER))) is not None:
                found = context.set_value(_CAUSE_IN, cause, found)
        token = context.attach(found)
        try:
            return await call_next(msg)
        finally:
            context.detach(token)

    async def publish_scope(self, call_next, cmd):
        if _tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return await call_next(cmd)
        body = cmd.body
        destination = metric_label(cmd.destination)
        attributes = {
            "messaging.system": "nats",
            "messaging.operation.name": "publish",
            "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            "messaging.message.id": (cmd.headers or {}).get(MSG_ID_HEADER),
            TASK_ID: getattr(body, "task_id", None),
            SUBTASK_ID: getattr(body, "subtask_id", None),
        }
        with _tracer.start_as_current_span(f"publish {destination}", kind=SpanKind.PRODUCER,
                                           attributes=_clean(attributes)) as span:
            anchor = context.get_value(_ANCHOR) or span.get_span_context()
            cmd.headers = {**(cmd.headers or {}), "traceparent": _format(anchor)}
            cause = context.get_value(_CAUSE_OUT) or context.get_value(_CAUSE_IN)
            if cause is not None:
                cmd.headers[CAUSE_HEADER] = _format(cause)
            return await call_next(cmd)


def broker_middlewares() -> tuple[BrokerMiddleware, ...]:
    """The NATS trace middleware when tracing is on; nothing otherwise."""
    if _provider is None:
        return ()
    return (TaskTracing,)


def _parse(traceparent: str | None) -> SpanContext | None:
    if not traceparent:
        return None
    found = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
    return found if found.is_valid else None


def _format(span_context: SpanContext) -> str:
    return f"00-{trace.format_trace_id(span_context.trace_id)}-{trace.format_span_id(span_context.span_id)}-{span_context.trace_flags:02x}"


# -- HTTP -------------------------------------------------------------------------------------


def instrument_fastapi(app: Any, *, excluded_urls: str, untraced_reads: Iterable[str] = ()) -> None:
    """The trace of a task starts at its POST (and continues a caller's `traceparent`).

    `excluded_urls` are never traced; `untraced_reads` (server span names: `GET <route>`) start
    no trace of their own, but join a caller's.
    """
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    UNTRACED_READS.update(untraced_reads)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        excluded_urls=excluded_urls,
        # One span per request; the ASGI receive/send spans would double every trace's noise.
        exclude_spans=["receive", "send"],
        server_request_hook=strip_query,
    )


class FreshContext:
    """An ASGI app's every request starts with an empty trace context.

    uvicorn re-arms a keep-alive connection's reader from inside the request being served, so
    the next request on that connection starts in the previous one's context: its server span
    became a child (INTERNAL) of the previous request's (seen on a client that polls, then posts).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        token = context.attach(context.Context())
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


URL_ATTRIBUTES = ("http.url", "http.target", "url.full")


def strip_query(span: Span | None, scope: Mapping[str, Any]) -> None:
    """No query string reaches a span: it may carry a key (`?access_token=` on the streams) or
    a signed link. The path stays; the query's parameters are not recorded."""
    if span is None or not span.is_recording() or not scope.get("query_string"):
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(name, value.split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "[redacted]")


# -- Spans ------------------------------------------------------------------------------------


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> contextlib.AbstractContextManager[Span | None]:
    """A child of the current span, current while the block runs; `None` when tracing is off.

    An exception leaving the block is recorded on the span, which then ends as an error.
    """
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(name, kind=kind, attributes=_clean(attributes))


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span."""
    if _tracer is None:
        return
    clean = _clean(attributes)
    if clean:
        trace.get_current_span().set_attributes(clean)


def set_attributes(span: Span | None, attributes: Mapping[str, Any]) -> None:
    if span is not None:
        clean = _clean(attributes)
        if clean:
            span.set_attributes(clean)


def set_error(span: Span | None, error_type: str, message: str) -> None:
    if span is not None:
        span.set_attribute(ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, message))


def current_trace_id() -> str | None:
    """The current trace's id as Jaeger shows it (32 hex digits); None when not tracing.

    None too when the sampler dropped this trace (`OTEL_TRACES_SAMPLER`): no link to a trace
    that no backend will ever have.
    """
    if _tracer is None:
        return None
    current = trace.get_current_span().get_span_context()
    if not current.is_valid or not current.trace_flags.sampled:
        return None
    return trace.format_trace_id(current.trace_id)


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, to continue its trace later (see `resume`)."""
    if current_trace_id() is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def reserve(traceparent: str | None = None) -> str | None:
    """The `traceparent` of a span yet to start (`resume(reserved=...)`), a child of
    `traceparent` (else of the current span): what hangs under it can be made before it."""
    if _tracer is None:
        return None
    parent = _parse(traceparent) if traceparent else trace.get_current_span().get_span_context()
    if parent is None or not parent.is_valid or not parent.trace_flags.sampled:
        return None
    assert _provider is not None
    span_id = _provider.id_generator.generate_span_id()
    return _format(SpanContext(parent.trace_id, span_id, is_remote=False, trace_flags=parent.trace_flags))


def resume(
    traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None, *, reserved: str | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span in the trace `traceparent` names, linked to the current one (the request that
    asked for it): what a retry publishes then joins the task's trace, not the request's.
    `reserved`: the span's own context, made beforehand by `reserve`."""
    if _tracer is None:
        return _NULL
    here = trace.get_current_span().get_span_context()
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    links = [Link(here)] if traceparent and here.is_valid else None
    made = _start(name, parent, attributes=_clean(attributes), links=links, preset=_parse(reserved))
    return trace.use_span(made, end_on_exit=True)


def _start(name: str, parent: context.Context | None, *, preset: SpanContext | None = None, **options: Any) -> Span:
    assert _tracer is not None
    token = _PRESET.set((preset.trace_id, preset.span_id) if preset is not None else None)
    try:
        return _tracer.start_span(name, context=parent, **options)
    finally:
        _PRESET.reset(token)


# -- The task's span ---------------------------------------------------------------------------


def open_workflow(parent: str | None = None) -> TraceSpan | None:
    """The context of a task round's span, made now (`within` puts it where the round's messages
    take it), exported when the round ends (`end_workflow`). `parent`: its parent's
    `traceparent`, else the current span. None when not tracing (or the trace is sampled out)."""
    span_context = _parse(reserve(parent))
    if span_context is None:
        return None
    parent_context = _parse(parent) if parent else trace.get_current_span().get_span_context()
    assert parent_context is not None  # `reserve` parsed the same `parent` (else no span_context)
    return TraceSpan(traceparent=_format(span_context), parent=_format(parent_context), started_at=utcnow())


@contextlib.contextmanager
def within(workflow: TraceSpan | None) -> Iterator[None]:
    """What is traced and published in the block hangs under the task's span (`open_workflow`)."""
    anchor = _parse(workflow.traceparent) if _tracer is not None and workflow is not None else None
    if anchor is None:
        yield
        return
    token = context.attach(context.set_value(_ANCHOR, anchor, trace.set_span_in_context(NonRecordingSpan(anchor))))
    try:
        yield
    finally:
        context.detach(token)


def end_workflow(state: TaskState) -> None:
    """Export the span of the task's round that just ended, from its start to now, with the
    outcome. Called once per round: by the task store, on the write that ended it."""
    workflow = state.workflow_span
    own = _parse(workflow.traceparent) if _tracer is not None and workflow is not None else None
    if own is None or not own.trace_flags.sampled:
        return
    assert workflow is not None
    parent = _parse(workflow.parent)
    attributes = {
        TASK_ID: state.id,
        ROUND: state.round,
        "aether.task.status": state.status.value,
        "aether.master.id": state.master_id,
        "aether.subtasks": len(state.subtasks),
    }
    if _latest:
        attributes |= {GEN_AI_OPERATION: "invoke_workflow", GEN_AI_WORKFLOW_NAME: WORKFLOW}
    if _content:
        attributes[GEN_AI_INPUT_MESSAGES] = content_json([{"role": "user", "content": state.description}])
        if state.final_result is not None:
            attributes[GEN_AI_OUTPUT_MESSAGES] = reply_json(state.final_result, (), "stop")
    made = _start(
        f"invoke_workflow {WORKFLOW}" if _latest else "task",
        trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else context.Context(),
        preset=own,
        attributes=_clean(attributes),
        start_time=_ns(workflow.started_at),
    )
    if state.status == TaskStatus.FAILED:
        made.set_attribute(ERROR_TYPE, "task_failed")
        made.set_status(Status(StatusCode.ERROR, (state.error or "failed")[:500]))
    made.end(end_time=_ns(state.completed_at or utcnow()))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


# -- Work spans ---------------------------------------------------------------------------------


def waited(
    name: str,
    traceparent: str | None,
    started: datetime | None,
    ended: datetime | None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A span, already ended, for a time the task waited for a person (issue 15), in the task's
    trace: it begins when the wait began, whichever process that was, and carries
    `aether.waited_s`."""
    if _tracer is None or started is None or ended is None:
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    waited_s = max(0.0, (ended - started).total_seconds())
    made = _start(
        name,
        parent,
        attributes=_clean({**(attributes or {}), "aether.waited_s": round(waited_s, 3)}),
        start_time=_ns(started),
    )
    made.end(end_time=_ns(ended))


def work(
    name: str,
    *,
    task_id: str,
    subtask_id: str | None = None,
    agent_type: str | None = None,
    **attributes: Any,
) -> contextlib.AbstractContextManager[Span | None]:
    """A unit of Aether's work with the ids every such span carries: a child of the current span
    (the task's, for a task's message), linked to the span whose end made it start, and the
    cause of what it publishes.

    A handler that is early (`RetryLater`), hands its message back (`HandBack`) or is cancelled
    at shutdown is not failing: its span ends with a `aether.deferred` event, not as an error,
    and the attempt that does the work appears beside it in the same trace.
    """
    if _tracer is None:
        return _NULL
    return _work(name, {TASK_ID: task_id, SUBTASK_ID: subtask_id, AGENT_TYPE: agent_type, **attributes})


def agent(
    name: str | None,
    *,
    task_id: str,
    agent_id: str | None = None,
    model: str | None = None,
    **attributes: Any,
) -> contextlib.AbstractContextManager[Span | None]:
    """An agent at work (an expert on a subtask, Jason synthesizing): `invoke_agent {name}`
    (`invoke_agent` until `agent_is` names it)."""
    if _tracer is None:
        return _NULL
    return _work(f"invoke_agent {name}" if name else "invoke_agent", {
        GEN_AI_OPERATION: "invoke_agent", GEN_AI_PROVIDER: PROVIDER, GEN_AI_AGENT_NAME: name,
        GEN_AI_AGENT_ID: agent_id, GEN_AI_REQUEST_MODEL: model, TASK_ID: task_id, **attributes,
    })


def planning(
    name: str | None, *, task_id: str, agent_id: str | None = None, replan: bool = False, **attributes: Any
) -> contextlib.AbstractContextManager[Span | None]:
    """Jason planning (or replanning) a task: `plan {name}` with the latest conventions, else
    Aether's own `plan` (`replan`), which the conventions before them had no name for."""
    if _tracer is None:
        return _NULL
    fields = {GEN_AI_AGENT_NAME: name, GEN_AI_AGENT_ID: agent_id, TASK_ID: task_id, AGENT_TYPE: agent_id, **attributes}
    if _latest:
        return _work(f"plan {name}" if name else "plan", {GEN_AI_OPERATION: "plan", **fields})
    return _work("replan" if replan else "plan", fields)


def agent_is(name: str, agent_id: str) -> None:
    """The current work span's agent, once it is known (Jason's, from the task's state)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if not current.is_recording():
        return
    named = getattr(current, "name", "")
    if named.startswith("invoke_agent") or (_latest and named.startswith("plan")):
        current.update_name(f"{named.split(' ', 1)[0]} {name}")
    current.set_attributes({GEN_AI_AGENT_NAME: name, GEN_AI_AGENT_ID: agent_id, AGENT_TYPE: agent_id})


def process(
    subject: str, durable: str, *, task_id: str, subtask_id: str | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A handler's processing of a message that is no agent's work (the scheduler's decisions):
    `process <subject>`, a consumer span under the task's; what it publishes has the same cause
    as the message it handles, so a subtask links to the one whose end made it ready."""
    if _tracer is None:
        return _NULL
    destination = metric_label(subject)
    return _work(f"process {destination}", {
        "messaging.system": "nats", "messaging.operation.name": "process", "messaging.operation.type": "process",
        "messaging.destination.name": destination, "messaging.consumer.group.name": durable,
        TASK_ID: task_id, SUBTASK_ID: subtask_id,
    }, kind=SpanKind.CONSUMER, cause=False)


@contextlib.contextmanager
def _work(name: str, attributes: dict[str, Any], *, kind: SpanKind = SpanKind.INTERNAL, cause: bool = True) -> Iterator[Span]:
    assert _tracer is not None
    made_by = cast("SpanContext | None", context.get_value(_CAUSE_IN))  # set by TaskTracing.consume_scope
    with _tracer.start_as_current_span(
        name, kind=kind, attributes=_clean(attributes), links=[Link(made_by)] if made_by is not None else None,
        record_exception=False, set_status_on_exception=False,
    ) as current:
        token = context.attach(context.set_value(_CAUSE_OUT, current.get_span_context())) if cause else None
        try:
            yield current
        except (RetryLater, HandBack, asyncio.CancelledError) as deferred:
            current.add_event(DEFERRED, {"reason": str(deferred) or type(deferred).__name__})
            raise
        except BaseException as exc:
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            if token is not None:
                context.detach(token)


# -- Message content (opt-in) ------------------------------------------------------------------


def content_json(messages: Sequence[Mapping[str, Any]]) -> str:
    """OpenAI chat messages as the conventions' `gen_ai.input.messages` (a JSON string)."""
    return json.dumps([_message(m) for m in messages], ensure_ascii=False)


def reply_json(text: str | None, calls: Iterable[Any], finish: str | None) -> str:
    """A reply (its text and tool calls) as `gen_ai.output.messages`."""
    parts = [{"type": "text", "content": _cut(text)}] if text else []
    parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": _arguments(c.arguments)} for c in calls]
    return json.dumps([{"role": "assistant", "parts": parts, "finish_reason": finish or "stop"}], ensure_ascii=False)


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    role = message.get("role", "user")
    body = message.get("content")
    if role == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                                           "response": _cut(body if isinstance(body, str) else json.dumps(body))}]}
    parts: list[dict[str, Any]] = []
    if isinstance(body, str) and body:
        parts.append({"type": "text", "content": _cut(body)})
    elif isinstance(body, list):  # content parts
        parts += [{"type": "text", "content": _cut(p.get("text", ""))} for p in body if isinstance(p, dict)]
    for call in message.get("tool_calls") or ():
        function = call.get("function", {})
        parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                      "arguments": _arguments(function.get("arguments"))})
    return {"role": role, "parts": parts}


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return _cut(raw)
    return raw


def _cut(text: str) -> str:
    if len(text) <= CONTENT_CHARS:
        return text
    return text[:CONTENT_CHARS] + f"[… {len(text) - CONTENT_CHARS} more characters]"


def cut(text: str) -> str:
    """A captured text (a tool's result) bounded as message parts are."""
    return _cut(text)
