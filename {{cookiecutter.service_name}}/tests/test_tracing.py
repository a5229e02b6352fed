"""Tracing, end to end: the real service exports over OTLP/HTTP to a receiver of the test's own.

Entry points start traces (a caller's `traceparent` is continued), probes and background polls do
not, log lines carry the ids of their span, and the shutdown flushes what is still buffered.
"""

from __future__ import annotations

import secrets
import signal
import time
import urllib.request

from .service import Service, free_port, http_get, running_service
from .tracing_support import (
    log_lines,
    log_trace_ids,
    running_collector,
    traced_env,
    traceparent,
)


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers={"Connection": "close", **(headers or {})})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def test_a_request_continues_the_callers_trace_and_its_log_line_names_it() -> None:
    trace_id = secrets.token_hex(16)
    with running_collector() as collector, running_service(**traced_env(collector)) as service:
        assert _get(f"{service.url}/v1/echo?msg=hi", {"traceparent": traceparent(trace_id)}) == 200
        [span] = collector.wait_for(lambda span: span.trace_id == trace_id)
        assert (span.name, span.kind, span.parent_span_id) == (
            "GET /v1/echo",
            "SERVER",
            "00f067aa0ba902b7",
        )
        assert span.service == "{{ cookiecutter.service_name }}"
        [line] = log_lines(service, "http_request", route="/v1/echo")
        assert (line["trace_id"], line["span_id"]) == (trace_id, span.span_id)


def test_traces_start_at_requests_only_not_at_probes_scrapes_or_background_polls() -> None:
    with running_collector() as collector, running_service(**traced_env(collector)) as service:
        for _ in range(3):
            assert http_get(f"{service.url}/livez")[0] == 200
            assert http_get(f"{service.url}/readyz")[0] == 200
            with urllib.request.urlopen(f"{service.admin_url}/metrics", timeout=5) as response:
                assert response.status == 200
        time.sleep(1.5)  # background loops poll meanwhile: outbox, consumer, if any
        assert collector.spans() == []
        assert _get(f"{service.url}/v1/echo?msg=new") == 200
        [span] = collector.wait_for(lambda span: span.kind == "SERVER")
        assert (span.name, span.parent_span_id) == ("GET /v1/echo", "")  # a new trace
        assert log_trace_ids(service, "http_request") == {span.trace_id}  # probes: no ids


def test_a_zero_ratio_starts_no_trace_but_follows_a_sampled_caller() -> None:
    trace_id = secrets.token_hex(16)
    with (
        running_collector() as collector,
        running_service(**traced_env(collector, OTEL_TRACES_SAMPLER_ARG="0")) as service,
    ):
        assert _get(f"{service.url}/v1/echo?msg=unsampled") == 200
        assert _get(f"{service.url}/v1/echo?msg=caller", {"traceparent": traceparent(trace_id)})
        [span] = collector.wait_for(lambda span: span.kind == "SERVER")
        assert span.trace_id == trace_id
        time.sleep(0.5)
        assert len(collector.spans(lambda span: span.kind == "SERVER")) == 1


def test_the_full_traces_endpoint_wins_over_the_base_endpoint() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with running_collector() as collector:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{collector.endpoint}/v1/traces"
        with running_service(**env) as service:
            assert _get(f"{service.url}/v1/echo?msg=full-url") == 200
            collector.wait_for(lambda span: span.name == "GET /v1/echo")


def test_otel_sdk_disabled_records_and_sends_nothing() -> None:
    trace_id = secrets.token_hex(16)
    with (
        running_collector() as collector,
        running_service(**traced_env(collector, OTEL_SDK_DISABLED="true")) as service,
    ):
        assert _get(f"{service.url}/v1/echo?msg=off", {"traceparent": traceparent(trace_id)})
        service.signal(signal.SIGTERM)
        assert service.wait_exit(timeout=15) == 0, service.output()
        assert collector.spans() == []
        assert log_trace_ids(service, "http_request") == set()
        assert service.events("tracing_disabled")


def test_the_shutdown_flushes_spans_still_buffered() -> None:
    """A batch delay of 10 minutes: nothing leaves before SIGTERM, everything after it."""
    with (
        running_collector() as collector,
        running_service(**traced_env(collector, OTEL_BSP_SCHEDULE_DELAY="600000")) as service,
    ):
        for index in range(5):
            assert _get(f"{service.url}/v1/echo?msg={index}") == 200
        time.sleep(0.3)
        assert collector.spans() == []
        service.signal(signal.SIGTERM)
        assert service.wait_exit(timeout=15) == 0, service.output()
        assert len(collector.spans(lambda span: span.name == "GET /v1/echo")) == 5
        assert service.events("tracing_flush_incomplete") == []


def test_an_unreachable_collector_does_not_hold_up_the_shutdown() -> None:
    """Spans are telemetry: past the flush budget the service exits without them, cleanly."""
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": dead_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    with running_service(**env, DRAIN_DELAY="0", SHUTDOWN_TIMEOUT="3") as service:
        for index in range(3):
            assert _get(f"{service.url}/v1/echo?msg={index}") == 200
        sent = service.signal(signal.SIGTERM)
        assert service.wait_exit(timeout=10) == 0, service.output()
        assert time.monotonic() - sent < 3.0 + 1.0
        [complete] = service.events("shutdown_complete")
        assert {phase["outcome"] for phase in complete["phases"]} == {"ok"}


def test_invalid_tracing_settings_exit_2_naming_the_variable() -> None:
    for name, value in [
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318/v1/traces"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SDK_DISABLED", "maybe"),
    ]:
        result = Service(**{name: value}).run_command("serve", timeout=30)  # nothing to clean
        assert result.returncode == 2, result.stdout + result.stderr
        assert name in result.stderr
