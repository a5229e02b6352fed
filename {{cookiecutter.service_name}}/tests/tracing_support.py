"""A minimal OTLP/HTTP trace receiver for the tracing tests: the service's real exporter sends
its spans here (127.0.0.1), and the tests look at what arrived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from typing_extensions import override

from .service import Service
from .support import poll_until


@dataclass(frozen=True)
class Span:
    name: str
    kind: str  # SERVER, CLIENT, CONSUMER, ...
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    service: str
    error: bool = False  # status ERROR
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in {"string_value", "int_value", "bool_value"} else None


class Collector:
    """Keeps every span POSTed to `<endpoint>/v1/traces`."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self.requests = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                collector._receive(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            @override
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest shows the test's own output."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _receive(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            name=span.name,
                            kind=SpanMessage.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            service=str(resource.get("service.name", "")),
                            error=span.status.code == Status.STATUS_CODE_ERROR,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self._spans.extend(received)
            self.requests += 1

    def spans(self, predicate: Callable[[Span], bool] = lambda span: True) -> list[Span]:
        with self._lock:
            return [span for span in self._spans if predicate(span)]

    def wait_for(
        self, predicate: Callable[[Span], bool], count: int = 1, timeout: float = 15.0
    ) -> list[Span]:
        """At least `count` spans matching `predicate` (polls; bounded by `timeout`)."""
        poll_until(
            lambda: len(self.spans(predicate)) >= count,
            f"{count} matching spans received",
            timeout,
        )
        return self.spans(predicate)


@contextmanager
def running_collector() -> Iterator[Collector]:
    collector = Collector()
    collector._thread.start()
    try:
        yield collector
    finally:
        collector._server.shutdown()
        collector._server.server_close()


def traced_env(collector: Collector, **env: str) -> dict[str, str]:
    """Service settings that export to `collector` right away (no batching delay)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **env,
    }


def traceparent(trace_id: str, span_id: str = "00f067aa0ba902b7") -> str:
    """A sampled W3C traceparent header, as a caller that traces would send."""
    return f"00-{trace_id}-{span_id}-01"


T = TypeVar("T", list[dict[str, Any]], set[str])


def _written(service: Service, read: Callable[[], T]) -> T:
    """`read()` of the service's log lines once it finds something, waited for (up to 5 s) while
    the service runs: lines reach stdout up to 50 ms late (logs.LogOutput)."""
    deadline = time.monotonic() + 5.0
    while True:
        found = read()
        running = service.process is not None and service.process.poll() is None
        if found or not running or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def log_lines(service: Service, event: str, **fields: Any) -> list[dict[str, Any]]:
    """The service's `event` log lines with these `fields`."""
    return _written(
        service,
        lambda: [
            line
            for line in service.events(event)
            if all(line.get(key) == value for key, value in fields.items())
        ],
    )


def log_trace_ids(service: Service, event: str) -> set[str]:
    """The trace ids on the service's `event` log lines."""
    return _written(
        service,
        lambda: {line["trace_id"] for line in service.events(event) if "trace_id" in line},
    )
