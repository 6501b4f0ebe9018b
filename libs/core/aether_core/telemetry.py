"""Tracing for every service: OpenTelemetry, exported over OTLP, one trace per task.

Configured only by the standard `OTEL_*` variables (see `config.TelemetrySettings`). With none
set, nothing is installed: the API's no-op tracer stays, no broker middleware is added, and
`span` hands back one shared null context, so an untraced service pays a test of one global per
span site and nothing else.

How a task becomes one trace (issue 6): the FastAPI instrumentation opens it at the gateway's
`POST`; FastStream's NATS telemetry middleware carries the context in message headers; each
handler opens its work span (`plan`, `subtask <id>`, `synthesis`) and publishes its next event
*inside* that span with `broker.publish`, so the next service's spans hang under the work that
caused them. Returning the event through a FastStream `@publisher` instead would parent it to the
incoming message and flatten the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
ATTEMPT = "aether.llm.attempt"
DEFERRED = "aether.deferred"
"""Event on a work span whose message goes back to the queue on purpose (not an error)."""

# OpenTelemetry GenAI semantic conventions (development status; names as of semconv 1.37+).
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
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_description = "off"
_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext(None)


def enabled() -> bool:
    return _tracer is not None


def description() -> str:
    """What this process exports, for heartbeats and logs: `off` or e.g. `otlp (grpc)`."""
    return _description


def setup(settings: TelemetrySettings, service: str, instance_id: str | None = None) -> bool:
    """Install the SDK and its exporters when the environment asks for tracing; else nothing.

    `service` is the default `service.name`; `OTEL_SERVICE_NAME` (or a `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`) wins, as the specification says. Once per process.
    """
    global _tracer, _provider, _description
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
    # variables.
    provider = TracerProvider(resource=Resource.create(defaults))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("aether")
    _description = ", ".join(
        f"otlp ({settings.otlp_protocol})" if name == "otlp" else name for name in exporters
    )
    log.info("tracing on: %s", _description)
    return True


def _exporter(name: str, settings: TelemetrySettings):
    # Endpoint, headers, certificates, compression and timeout come from OTEL_EXPORTER_OTLP_*,
    # read by the exporters themselves.
    if name == "otlp":
        if settings.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(
        f"OTEL_TRACES_EXPORTER names '{name}', which Aether does not ship; use otlp, console or none"
    )


def broker_middlewares() -> tuple[BrokerMiddleware, ...]:
    """FastStream's NATS telemetry middleware when tracing is on; nothing otherwise."""
    if _provider is None:
        return ()
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware
    from opentelemetry.metrics import NoOpMeterProvider

    # Metrics go to Prometheus (aether_core.metrics), not through OpenTelemetry.
    return (NatsTelemetryMiddleware(tracer_provider=_provider, meter_provider=NoOpMeterProvider()),)


def instrument_fastapi(app: Any, *, excluded_urls: str) -> None:
    """The trace of a task starts at its POST (and continues a caller's `traceparent`)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

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
        from opentelemetry import context

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
    """Add attributes to the current span (e.g. the task id on a FastStream process span)."""
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
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return trace.format_trace_id(context.trace_id)


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, to continue its trace later (see `resume`)."""
    if current_trace_id() is None:
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def resume(
    traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span in the trace `traceparent` names, linked to the current one (the request that
    asked for it): what a retry publishes then joins the task's trace, not the request's."""
    if _tracer is None:
        return _NULL
    if not traceparent:
        return span(name, attributes)
    here = trace.get_current_span().get_span_context()
    return _tracer.start_as_current_span(
        name,
        context=TraceContextTextMapPropagator().extract({"traceparent": traceparent}),
        links=[Link(here)] if here.is_valid else None,
        attributes=_clean(attributes),
    )


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
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    waited_s = max(0.0, (ended - started).total_seconds())
    span = _tracer.start_span(
        name,
        context=context,
        attributes=_clean({**(attributes or {}), "aether.waited_s": round(waited_s, 3)}),
        start_time=int(started.timestamp() * 1e9),
    )
    span.end(end_time=int(ended.timestamp() * 1e9))


def work(
    name: str,
    *,
    task_id: str,
    subtask_id: str | None = None,
    agent_type: str | None = None,
    **attributes: Any,
) -> contextlib.AbstractContextManager[Span | None]:
    """A unit of Aether's work (plan, subtask, synthesis) with the ids every such span carries.

    A handler that is early (`RetryLater`), hands its message back (`HandBack`) or is cancelled
    at shutdown is not failing: its span ends with a `aether.deferred` event, not as an error,
    and the attempt that does the work appears beside it in the same trace.
    """
    if _tracer is None:
        return _NULL
    return _work(name, {TASK_ID: task_id, SUBTASK_ID: subtask_id, AGENT_TYPE: agent_type, **attributes})


@contextlib.contextmanager
def _work(name: str, attributes: dict[str, Any]) -> Iterator[Span]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        name, attributes=_clean(attributes), record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except (RetryLater, HandBack, asyncio.CancelledError) as deferred:
            current.add_event(DEFERRED, {"reason": str(deferred) or type(deferred).__name__})
            raise
        except BaseException as exc:
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
