"""Tracing of RPCs: a caller's trace continues in the server span{% if cookiecutter.use_consumer == "yes" %} and, for CreateItem, in the
consumer's span for the item's event{% endif %}; health checks start no trace."""

from __future__ import annotations

import asyncio
import secrets

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from {{ cookiecutter.package_name }}.v1 import (
    echo_pb2,
    echo_pb2_grpc,
{%- if cookiecutter.use_postgres == "yes" %}
    items_pb2,
    items_pb2_grpc,
{%- endif %}
)

from .service import running_service
from .tracing_support import log_trace_ids, running_collector, traced_env, traceparent


def _metadata(trace_id: str) -> tuple[tuple[str, str], ...]:
    return (("traceparent", traceparent(trace_id)),)


async def test_an_rpc_continues_the_callers_trace_and_health_checks_start_none() -> None:
    trace_id = secrets.token_hex(16)
    with running_collector() as collector, running_service(**traced_env(collector)) as service:
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                await health.Check(health_pb2.HealthCheckRequest(service=""))
            echo = echo_pb2_grpc.EchoServiceStub(channel)
            request = echo_pb2.EchoRequest(message="hi")
            reply = await echo.Echo(request, metadata=_metadata(trace_id))
            assert reply.message == "hi"
        [span] = await asyncio.to_thread(collector.wait_for, lambda s: s.kind == "SERVER")
        assert (span.name, span.trace_id, span.parent_span_id) == (
            "/{{ cookiecutter.package_name }}.v1.EchoService/Echo",
            trace_id,
            "00f067aa0ba902b7",
        )
        await asyncio.sleep(0.5)
        assert len(collector.spans()) == 1  # no span for the health checks
        assert log_trace_ids(service, "grpc_request") == {trace_id}
{%- if cookiecutter.use_postgres == "yes" %}


async def test_create_item_over_grpc_is_one_trace_{% if cookiecutter.use_consumer == "yes" %}down_to_the_consumer{% else %}with_its_queries{% endif %}() -> None:
    trace_id = secrets.token_hex(16)
    with running_collector() as collector, running_service(**traced_env(collector)) as service:
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            items = items_pb2_grpc.ItemServiceStub(channel)
            request = items_pb2.CreateItemRequest(name="traced", quantity=2)
            await items.CreateItem(request, metadata=_metadata(trace_id))
        [server] = await asyncio.to_thread(
            collector.wait_for, lambda s: s.trace_id == trace_id and s.kind == "SERVER"
        )
        assert server.name == "/{{ cookiecutter.package_name }}.v1.ItemService/CreateItem"
        # The request's own queries (the consumer's, in the same trace, may be done already).
        queries = collector.spans(
            lambda s: (
                s.trace_id == trace_id and s.kind == "CLIENT" and s.parent_span_id == server.span_id
            )
        )
        assert queries
{%- if cookiecutter.use_consumer == "yes" %}
        [consumed] = await asyncio.to_thread(
            collector.wait_for, lambda s: s.trace_id == trace_id and s.kind == "CONSUMER", 1, 20
        )
        assert consumed.parent_span_id == server.span_id
{%- endif %}
{%- endif %}
