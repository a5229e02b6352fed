"""Tracing with OpenTelemetry: spans for HTTP requests, RPCs, Postgres and Redis calls and
consumed events, and the trace carried from a request into the events it causes.

Traces start only at entry points (a request, an RPC, a consumed event; probes and scrapes
excepted): the background loops' own calls (outbox polling, blocking XREADGROUPs) start none, so
an idle service exports nothing. Spans leave through a batch processor (OTLP over HTTP); the
`close` phase flushes what is still buffered, bounded by the shutdown budget.

This module exists only with the `use_tracing` answer: without it, nothing of OpenTelemetry is
installed or imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

import structlog
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from pydantic import Field
from typing_extensions import override

from .assembly import Assembly, Feature
from .lifecycle import EXIT_MARGIN, Component, close_reserve
from .logs import log
from .settings import Settings, SettingsGroup

HTTP_URL = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
"""An http(s) URL: the OpenTelemetry endpoints."""


class TracingSettings(SettingsGroup):
    """The standard OpenTelemetry variable names, checked like every other knob."""

    otel_service_name: str = Field(default="{{ cookiecutter.service_name }}", min_length=1)
    otel_traces_exporter: Literal["otlp", "console", "none"] = Field(
        default="otlp", description="otlp: OTLP/HTTP to the endpoint; console: stdout; none."
    )
    otel_sdk_disabled: bool = Field(default=False, description="true: no spans, no export.")
    otel_exporter_otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318",
        pattern=HTTP_URL,
        description="The collector's base URL (spans go to <endpoint>/v1/traces).",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, pattern=HTTP_URL, description="The full URL for spans, if not the above."
    )
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = Field(
        default="http/protobuf", description="Only OTLP over HTTP is installed (no gRPC exporter)."
    )
    otel_traces_sampler_arg: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a caller's sampled trace is always followed.",
    )


UNTRACED_SPANS = re.compile(
    r"(GET|HEAD) /(livez|readyz|metrics|debug/tasks)|/grpc\.health\.v1\.Health/\w+"
)
"""Probes and scrapes: frequent, uninteresting, and they would bury the real traces."""

INSTRUMENTORS = (
    ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
    ("opentelemetry.instrumentation.grpc", "GrpcAioInstrumentorServer"),
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
)
"""The libraries of the template's options, instrumented when their instrumentation is installed
(the options add it to pyproject.toml with the library). The aiohttp server is always there."""


def instrument_installed(provider: TracerProvider) -> list[str]:
    """Instrument every library of INSTRUMENTORS whose instrumentation is installed; their names."""
    done = []
    for module_name, class_name in INSTRUMENTORS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        getattr(module, class_name)().instrument(tracer_provider=provider)
        done.append(module_name.rpartition(".")[2])
    return done


class EntryPointSampler(Sampler):
    """Starts a trace for `ratio` of the requests, RPCs and consumed events (server and consumer
    spans) and for nothing else: a client call outside any trace is a background poll.
    Within a trace, `ParentBased` follows the parent's decision (a caller's traceparent too)."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    @override
    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind not in (SpanKind.SERVER, SpanKind.CONSUMER) or UNTRACED_SPANS.fullmatch(name):
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    @override
    def get_description(self) -> str:
        return f"EntryPointSampler(ratio={self._ratio.rate})"


def _exporter(settings: TracingSettings) -> SpanExporter | None:
    if settings.otel_traces_exporter == "otlp":
        endpoint = settings.otel_exporter_otlp_traces_endpoint or (
            settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        )
        return OTLPSpanExporter(endpoint=endpoint)
    if settings.otel_traces_exporter == "console":
        return ConsoleSpanExporter()
    return None


def _service_version() -> str:
    try:
        return version("{{ cookiecutter.service_name }}")
    except PackageNotFoundError:
        return "unknown"


class EventTracing:
    """The trace context that travels with an event: captured when the event is written (inside
    the request's span), continued by the consumer's span for the event."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def outgoing(self) -> dict[str, str]:
        """W3C `traceparent`/`tracestate` of the current span ({} outside a sampled trace)."""
        headers: dict[str, str] = {}
        propagate.inject(headers)
        return headers

    @contextmanager
    def incoming(
        self, stream: str, event_type: str, message_id: str, headers: Mapping[str, str]
    ) -> Iterator[None]:
        """The consumer's span for one event, a child of the request that caused it."""
        with self._tracer.start_as_current_span(
            f"{event_type} process",
            context=propagate.extract(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "process",
                "messaging.destination.name": stream,
                "messaging.message.id": message_id,
            },
        ):
            yield


class Tracing(Component):
    """Instruments the libraries when built, so build it before the servers and clients;
    flushes the spans still buffered in the `close` phase."""

    name = "tracing"

    def __init__(self, platform: Settings, settings: TracingSettings) -> None:
        self._flush_budget = max(0.05, close_reserve(platform.shutdown_timeout) - EXIT_MARGIN)
        resource = Resource.create(
            {"service.name": settings.otel_service_name, "service.version": _service_version()}
        )
        sampler = ParentBased(root=EntryPointSampler(settings.otel_traces_sampler_arg))
        provider = TracerProvider(resource=resource, sampler=sampler)
        self._processor: BatchSpanProcessor | None = None
        if settings.otel_sdk_disabled:
            self.events = EventTracing(trace.NoOpTracer())
            log.info("tracing_disabled", reason="OTEL_SDK_DISABLED")
            return
        if (exporter := _exporter(settings)) is not None:
            self._processor = BatchSpanProcessor(exporter)
            provider.add_span_processor(self._processor)
        AioHttpServerInstrumentor().instrument(tracer_provider=provider)
        instrumented = ["aiohttp_server", *instrument_installed(provider)]
        self.events = EventTracing(provider.get_tracer(__name__))
        log.info(
            "tracing_enabled",
            exporter=settings.otel_traces_exporter,
            sampled_ratio=settings.otel_traces_sampler_arg,
            instrumented=instrumented,
        )

    @override
    async def close(self) -> None:
        """Export what the batch processor still holds, within the budget. The export runs in
        a daemon thread of its own: past the budget the process exits without waiting for it
        (spans are telemetry, not data), which the default executor would not allow."""
        if self._processor is None:
            return
        loop = asyncio.get_running_loop()
        flushed = asyncio.Event()

        def flush() -> None:
            assert self._processor is not None
            self._processor.force_flush()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(flushed.set)

        threading.Thread(target=flush, name="tracing-flush", daemon=True).start()
        try:
            await asyncio.wait_for(flushed.wait(), self._flush_budget)
        except TimeoutError:
            log.warning("tracing_flush_incomplete", budget_s=round(self._flush_budget, 3))


def add_trace_ids(
    logger: object, method_name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """structlog processor: the ids of the current span, when it is recorded (an unsampled
    span's ids lead nowhere)."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.trace_flags.sampled:
        event_dict["trace_id"] = trace.format_trace_id(span_context.trace_id)
        event_dict["span_id"] = trace.format_span_id(span_context.span_id)
    return event_dict


def _wire(assembly: Assembly) -> None:
    tracing = Tracing(assembly.settings, assembly.config[TracingSettings])
    assembly.instrumentation.append(tracing)
    assembly.events = tracing.events  # the trace context travels with the events written


TRACING = Feature(
    "tracing", wire=_wire, settings=(TracingSettings,), log_processors=(add_trace_ids,)
)
"""OpenTelemetry: list it first (it instruments the libraries the others use)."""
