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
    assert not any(isinstance(m, TelemetryMiddleware) for m in middlewares)
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
