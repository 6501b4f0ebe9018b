"""Tracing is on only when the standard OTEL_* variables ask for it, and off costs nothing."""

import json
import subprocess
import sys

import pytest
from faststream.opentelemetry.middleware import TelemetryMiddleware
from faststream.prometheus.middleware import PrometheusMiddleware
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from aether_core import telemetry
from aether_core.config import TelemetrySettings


@pytest.mark.parametrize(
    ("env", "exporters", "protocol"),
    [
        ({}, [], "http/protobuf"),
        ({"OTEL_SERVICE_NAME": "planner"}, [], "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, [], "grpc"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, ["otlp"], "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, ["otlp"], "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ["otlp"], "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            [],
            "http/protobuf",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"], "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"], "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, [], "http/protobuf"),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, [], "http/protobuf"),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, ["otlp"], "http/protobuf"),
    ],
)
def test_exporters_follow_the_standard_variables(monkeypatch, env, exporters, protocol):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = TelemetrySettings()
    assert settings.trace_exporters == exporters
    assert settings.otlp_protocol == protocol


def test_an_unsupported_protocol_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        TelemetrySettings()


def test_without_otel_variables_a_service_installs_no_tracing_at_all():
    from aether_planner.main import create_app
    from aether_planner.settings import PlannerSettings

    app = create_app(PlannerSettings(openai_api_key="unused", instance_id="no-otel"))
    assert not telemetry.enabled() and telemetry.description() == "off"
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    middlewares = app.broker.middlewares
    assert not any(isinstance(m, TelemetryMiddleware) or m is telemetry.TaskTracing for m in middlewares)
    assert any(isinstance(m, PrometheusMiddleware) for m in middlewares)  # metrics stay on
    with telemetry.span("anything") as span, telemetry.work("plan", task_id="t") as work:
        assert span is None and work is None
        assert telemetry.current_trace_id() is None


WORK_SPANS = r"""
import contextlib
from aether_core import telemetry
from aether_core.config import TelemetrySettings
from aether_core.errors import RetryLater

assert telemetry.setup(TelemetrySettings(), "unit-test", "unit-1")
with contextlib.suppress(RetryLater), telemetry.work("early", task_id="t1"):
    raise RetryLater("no state yet")
with contextlib.suppress(ValueError), telemetry.work("broken", task_id="t1", subtask_id="s1", agent_type="fullstack"):
    raise ValueError("bad plan")
with telemetry.work("fine", task_id="t1"):
    pass
"""


def test_work_spans_tell_a_deferral_from_a_failure():
    """In a process of its own (tracing is process-wide), exporting to the console."""
    env = {"OTEL_TRACES_EXPORTER": "console", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", WORK_SPANS], env=env, capture_output=True, text=True, check=True).stdout
    decoder, spans, at = json.JSONDecoder(), {}, 0
    while (start := out.find("{", at)) != -1:
        span, at = decoder.raw_decode(out, start)
        spans[span["name"]] = span
    assert set(spans) == {"early", "broken", "fine"}
    assert spans["early"]["status"]["status_code"] == "UNSET"
    assert [e["name"] for e in spans["early"]["events"]] == ["aether.deferred"]
    assert spans["early"]["events"][0]["attributes"]["reason"] == "no state yet"
    assert spans["broken"]["status"]["status_code"] == "ERROR"
    assert [e["name"] for e in spans["broken"]["events"]] == ["exception"]
    assert spans["broken"]["attributes"] == {
        "aether.task.id": "t1", "aether.subtask.id": "s1", "aether.agent.type": "fullstack"
    }
    assert spans["fine"]["status"]["status_code"] == "UNSET" and spans["fine"]["events"] == []
    assert spans["fine"]["resource"]["attributes"]["service.name"] == "unit-test"


@pytest.mark.parametrize(
    ("env", "latest", "content"),
    [
        ({}, False, False),
        ({"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}, True, False),
        ({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, gen_ai_latest_experimental"}, True, False),
        ({"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}, False, False),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}, False, True),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "False"}, False, False),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}, False, True),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_and_event"}, False, True),
        # Aether emits no events: content for events only is content nowhere.
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY"}, False, False),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "NO_CONTENT"}, False, False),
    ],
)
def test_genai_conventions_and_content_follow_the_standard_variables(monkeypatch, env, latest, content):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = TelemetrySettings()
    assert (settings.genai_latest, settings.capture_content) == (latest, content)


def test_an_unknown_content_mode_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "sometimes")
    with pytest.raises(ValueError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
        TelemetrySettings()


def test_messages_are_recorded_in_the_conventions_shape():
    messages = [
        {"role": "system", "content": "You are an expert."},
        {"role": "user", "content": "Write a file."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "write_file", "arguments": '{"path": "a.py"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "run_command", "arguments": "not json"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "wrote a.py"},
    ]
    assert json.loads(telemetry.content_json(messages)) == [
        {"role": "system", "parts": [{"type": "text", "content": "You are an expert."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Write a file."}]},
        {"role": "assistant", "parts": [
            {"type": "tool_call", "id": "call_1", "name": "write_file", "arguments": {"path": "a.py"}},
            {"type": "tool_call", "id": "call_2", "name": "run_command", "arguments": "not json"},
        ]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "wrote a.py"}]},
    ]
    long = "x" * (telemetry.CONTENT_CHARS + 5)
    [reply] = json.loads(telemetry.reply_json(long, [], None))
    assert reply["role"] == "assistant" and reply["finish_reason"] == "stop"
    assert reply["parts"][0]["content"] == "x" * telemetry.CONTENT_CHARS + "[… 5 more characters]"


TASK_SPAN = r"""
import json, sys
from datetime import timedelta
from opentelemetry.trace import SpanKind
from aether_contracts.state import TaskState, TaskStatus
from aether_core import telemetry
from aether_core.config import TelemetrySettings

assert telemetry.setup(TelemetrySettings(), "unit-test", "unit-1")
telemetry.UNTRACED_READS.add("GET /polled")
tracer = telemetry._tracer
with tracer.start_as_current_span("POST /submit", kind=SpanKind.SERVER) as post:
    workflow = telemetry.open_workflow()
    with telemetry.within(workflow), telemetry.work("plan", task_id="t1"):
        pass
state = TaskState(id="t1", description="Build it", workflow_span=workflow)
state.workflow_span.started_at -= timedelta(seconds=3)
state.final_result = "Built"
state.set_status(TaskStatus.COMPLETED, "done")
telemetry.end_workflow(state)
# A polled read starts no trace, joins a caller's; other requests are traced as before.
for name, parented in (("GET /polled", False), ("GET /polled", True), ("GET /other", False)):
    with tracer.start_as_current_span("caller") if parented else telemetry._NULL:
        with tracer.start_as_current_span(name, kind=SpanKind.SERVER) as read:
            print(json.dumps({"read": name, "parented": parented, "recording": read.is_recording()}), file=sys.stderr)
print(json.dumps({"workflow": workflow.model_dump(mode="json")}), file=sys.stderr)
"""


@pytest.mark.parametrize("latest", [False, True])
def test_a_tasks_span_is_made_at_the_submission_and_exported_when_the_task_ends(latest):
    """Its context exists from the POST on (its children can parent on it), the span itself only
    at the end: with the id it was given, its parent, its real start and the task's outcome."""
    env = {"OTEL_TRACES_EXPORTER": "console", "PATH": "/usr/bin:/bin", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    if latest:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    run = subprocess.run([sys.executable, "-c", TASK_SPAN], env=env, capture_output=True, text=True, check=True)
    decoder, spans, at = json.JSONDecoder(), {}, 0
    while (start := run.stdout.find("{", at)) != -1:
        span, at = decoder.raw_decode(run.stdout, start)
        spans[span["name"]] = span
    notes = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    workflow = next(n["workflow"] for n in notes if "workflow" in n)
    name = "invoke_workflow aether" if latest else "task"
    assert set(spans) >= {"POST /submit", "plan", name}
    task, post, plan = spans[name], spans["POST /submit"], spans["plan"]
    _, trace_id, span_id, _ = workflow["traceparent"].split("-")
    assert task["context"]["trace_id"] == post["context"]["trace_id"] == plan["context"]["trace_id"] == f"0x{trace_id}"
    assert task["context"]["span_id"] == f"0x{span_id}" == plan["parent_id"]
    assert task["parent_id"] == post["context"]["span_id"]
    assert task["kind"] == "SpanKind.INTERNAL" and task["status"]["status_code"] == "UNSET"
    assert task["start_time"] < post["start_time"] and task["end_time"] > plan["end_time"]
    a = task["attributes"]
    assert a["aether.task.id"] == "t1" and a["aether.task.status"] == "completed" and a["aether.round"] == 1
    assert json.loads(a["gen_ai.input.messages"])[0]["parts"][0]["content"] == "Build it"
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Built"
    assert (a.get("gen_ai.operation.name"), a.get("gen_ai.workflow.name")) == (
        ("invoke_workflow", "aether") if latest else (None, None)
    )
    reads = [(n["read"], n["parented"], n["recording"]) for n in notes if "read" in n]
    assert reads == [("GET /polled", False, False), ("GET /polled", True, True), ("GET /other", False, True)]
