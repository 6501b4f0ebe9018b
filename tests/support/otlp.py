"""OTLP trace receivers, standing in for Jaeger (which cannot run here): the services export to
them over the real protocol, gRPC or HTTP/protobuf, and the tests read the spans they got."""

from __future__ import annotations

import gzip
import threading
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    error: bool = False
    events: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(trace id, span id) of each linked span."""
    start_ns: int = 0
    end_ns: int = 0

    def __repr__(self) -> str:
        return f"<{self.service}: {self.name} {self.span_id} ← {self.parent_id}>"


def depth(span: Span, by_id: dict[str, Span]) -> int:
    """1 for a root; a span whose parent is not in `by_id` counts as a root."""
    levels = 1
    while span.parent_id is not None and span.parent_id in by_id:
        span = by_id[span.parent_id]
        levels += 1
    return levels


def render(spans: list[Span]) -> str:
    """A trace as an indented tree (with each span's links), for a failing test's message."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = span.parent_id if span.parent_id in by_id else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, level: int) -> None:
        for span in children.get(parent, []):
            links = [by_id[s].name if s in by_id else s for _, s in span.links]
            lines.append(f"{'  ' * level}{span.name} [{span.service}, {span.kind.removeprefix('SPAN_KIND_')}]"
                         + (f" -> {links}" if links else ""))
            walk(span.span_id, level + 1)

    walk(None, 0)
    return "\n".join(lines)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class SpanSink:
    """The spans received, whichever transport brought them."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            kind=SpanProto.SpanKind.Name(span.kind),
                            service=resource.get("service.name", "?"),
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            error=span.status.code == span.status.STATUS_CODE_ERROR,
                            events=[event.name for event in span.events],
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.requests += 1

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)


class HttpReceiver(SpanSink):
    """OTLP/HTTP with protobuf bodies: `POST /v1/traces`."""

    protocol = "http/protobuf"

    def __init__(self) -> None:
        super().__init__()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                collector.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcReceiver(SpanSink):
    """OTLP/gRPC: the `TraceService.Export` call."""

    protocol = "grpc"

    def __init__(self) -> None:
        import grpc

        super().__init__()
        collector = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                collector.add(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)


def receiver(protocol: str) -> HttpReceiver | GrpcReceiver:
    return GrpcReceiver() if protocol == "grpc" else HttpReceiver()
