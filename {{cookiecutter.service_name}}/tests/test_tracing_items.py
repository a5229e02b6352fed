"""Tracing through the data path: a created item's event carries the request's trace context
through the outbox and the stream{% if cookiecutter.use_consumer == "yes" %}, and the consumer's span for it joins that trace{% endif %}."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
{%- if cookiecutter.use_consumer == "yes" %}
import uuid
{%- endif %}
from collections.abc import Callable
from typing import Any

import redis

from .service import Service, running_service
from .tracing_support import Collector, log_trace_ids, running_collector, traced_env, traceparent


def _create(service: Service, name: str, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{service.url}/v1/items",
        data=json.dumps({"name": name, "quantity": 1}).encode(),
        headers={"Content-Type": "application/json", "Connection": "close", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        body: dict[str, Any] = json.loads(response.read())
        return body


def _stream_headers(service: Service) -> list[dict[str, str]]:
    """The `headers` field of every entry of the service's events stream."""
    url = service.env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = client.xrange(service.env["EVENTS_STREAM"]) or []
    finally:
        client.close()
    return [json.loads((fields or {}).get("headers", "{}")) for _, fields in entries]


def _eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def _spans_of(collector: Collector, trace_id: str, kind: str) -> list[Any]:
    return collector.spans(lambda span: span.trace_id == trace_id and span.kind == kind)


def test_the_event_of_a_traced_request_carries_its_trace_context() -> None:
    trace_id = secrets.token_hex(16)
    with running_collector() as collector, running_service(**traced_env(collector)) as service:
        _create(service, "traced", {"traceparent": traceparent(trace_id)})
        [server] = collector.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER")
        assert server.name == "POST /v1/items"
        # The database calls of the request are its children, in the same trace (the consumer's
        # effect, in the same trace too, may be done already: its calls are its span's children).
        queries = [
            span
            for span in _spans_of(collector, trace_id, "CLIENT")
            if span.parent_span_id == server.span_id
        ]
        assert queries
        assert {span.attributes.get("db.system") for span in queries} <= {"postgresql", None}

        # The outbox row (and so the stream entry) carries the request's span as the parent,
        # beside the request id.
        expected = f"00-{trace_id}-{server.span_id}-01"

        def published() -> bool:
            return any(h.get("traceparent") == expected for h in _stream_headers(service))

        assert _eventually(published), service.output()
        [headers] = _stream_headers(service)
        assert headers["request_id"], headers
        assert trace_id in log_trace_ids(service, "http_request")
{%- if cookiecutter.use_consumer == "yes" %}

        # The consumer's span continues the trace, a child of the request's span.
        [consumed] = collector.wait_for(
            lambda s: s.trace_id == trace_id and s.kind == "CONSUMER", timeout=20
        )
        assert consumed.name == "item.created process"
        assert consumed.parent_span_id == server.span_id
        assert consumed.attributes["messaging.destination.name"] == service.env["EVENTS_STREAM"]
        effect = collector.wait_for(
            lambda s: s.trace_id == trace_id and s.parent_span_id == consumed.span_id
        )
        assert effect  # the effect's queries, inside the consumer's span
        assert not consumed.error


def test_an_event_that_fails_is_an_error_span_in_its_trace() -> None:
    trace_id = secrets.token_hex(16)
    with running_collector() as collector, running_service(**traced_env(collector)) as service:
        client = redis.Redis.from_url(service.env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        try:
            client.xadd(
                service.env["EVENTS_STREAM"],
                {
                    "type": "no.such.event",
                    "event_id": str(uuid.uuid4()),
                    "payload": "{}",
                    "headers": json.dumps({"traceparent": traceparent(trace_id)}),
                },
            )
        finally:
            client.close()
        [failed, *_] = collector.wait_for(
            lambda s: s.trace_id == trace_id and s.kind == "CONSUMER", timeout=20
        )
        assert (failed.name, failed.error) == ("no.such.event process", True)
{%- endif %}


def test_an_unsampled_request_stays_unsampled_downstream() -> None:
    """Sampling ratio 0: the event carries the decision (W3C flags without `sampled`), so the
    consumer records no span for it either."""
    with (
        running_collector() as collector,
        running_service(**traced_env(collector, OTEL_TRACES_SAMPLER_ARG="0")) as service,
    ):
        _create(service, "unsampled", {})
        assert _eventually(lambda: bool(_stream_headers(service))), service.output()
        [headers] = _stream_headers(service)
        flags = headers["traceparent"].split("-")[3]
        assert int(flags, 16) & 0x01 == 0, headers  # not sampled
        time.sleep(1.0)  # the consumer handles the event meanwhile
        assert collector.spans() == []
