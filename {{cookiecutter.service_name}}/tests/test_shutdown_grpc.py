"""The real service as a subprocess: SIGTERM under gRPC load, health, and stream ending."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from {{ cookiecutter.package_name }}.v1 import echo_pb2, echo_pb2_grpc

from .metrics_support import wait_in_flight
from .service import running_service


async def _echo(target: str, message: str, delay_ms: int) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoRequest(message=message, delay_ms=delay_ms)
        return (await stub.Echo(request, timeout=20)).message


async def _health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)


EchoStream = grpc.aio.UnaryStreamCall[echo_pb2.EchoStreamRequest, echo_pb2.EchoResponse]


async def _read_to_end(stream: EchoStream) -> tuple[int, grpc.aio.AioRpcError | None]:
    replies = 0
    try:
        while await stream.read() is not grpc.aio.EOF:
            replies += 1
    except grpc.aio.AioRpcError as error:
        return replies, error
    return replies, None


async def test_in_flight_unary_rpcs_complete_across_sigterm() -> None:
    with running_service(DRAIN_DELAY="0.5", SHUTDOWN_TIMEOUT="10") as service:
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            calls = [
                asyncio.ensure_future(
                    stub.Echo(echo_pb2.EchoRequest(message=f"m{i}", delay_ms=1500), timeout=20)
                )
                for i in range(40)
            ]
            await wait_in_flight(service, "grpc_server_in_flight", 40)
            service.signal(signal.SIGTERM)
            replies = await asyncio.gather(*calls)
        assert [reply.message for reply in replies] == [f"m{i}" for i in range(40)]
        assert service.wait_exit(timeout=15) == 0, service.output()


async def test_not_serving_at_once_and_new_rpcs_until_drain_delay_ends() -> None:
    with running_service(DRAIN_DELAY="3", SHUTDOWN_TIMEOUT="15") as service:
        assert await _health(service.grpc_target) == health_pb2.HealthCheckResponse.SERVING
        long_call = asyncio.ensure_future(_echo(service.grpc_target, "long", 5000))
        await wait_in_flight(service, "grpc_server_in_flight", 1)
        signalled = service.signal(signal.SIGTERM)
        await asyncio.to_thread(service.wait_for_event, "shutdown_requested")

        assert await _health(service.grpc_target) == health_pb2.HealthCheckResponse.NOT_SERVING
        # a new channel is still served during the drain delay
        assert await _echo(service.grpc_target, "during", 0) == "during"
        assert time.monotonic() - signalled < 3, "checks must run inside the drain delay"

        await asyncio.sleep(max(0.0, signalled + 3.5 - time.monotonic()))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _echo(service.grpc_target, "after", 0)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await long_call == "long"
        assert await asyncio.to_thread(service.wait_exit, 15) == 0, service.output()


async def test_open_streams_end_with_unavailable_when_listeners_close() -> None:
    with running_service(DRAIN_DELAY="1", SHUTDOWN_TIMEOUT="15") as service:
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            streams = [
                stub.EchoStream(echo_pb2.EchoStreamRequest(message=f"s{i}", delay_ms=100))
                for i in range(5)
            ]
            for stream in streams:
                first = await stream.read()
                assert isinstance(first, echo_pb2.EchoResponse)
                assert first.sequence == 1
            signalled = service.signal(signal.SIGTERM)
            ends = await asyncio.gather(*(_read_to_end(stream) for stream in streams))
            ended_after = time.monotonic() - signalled
        for replies, error in ends:
            assert error is not None, "the stream must end with an error status"
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (error.details() or "")
            assert replies >= 5, "streams keep flowing during the drain delay"
        assert 1.0 <= ended_after < 1 + 2.5, ended_after
        assert service.wait_exit(timeout=15) == 0, service.output()
