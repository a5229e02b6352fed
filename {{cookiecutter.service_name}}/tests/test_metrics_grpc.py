"""gRPC metrics, access log lines and the shutdown report, on the real service."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from {{ cookiecutter.package_name }}.v1 import echo_pb2, echo_pb2_grpc

from .metrics_support import scrape
from .service import running_service

ECHO = "/{{ cookiecutter.package_name }}.v1.EchoService/Echo"
ECHO_STREAM = "/{{ cookiecutter.package_name }}.v1.EchoService/EchoStream"


async def test_rpcs_counted_by_method_and_code_streams_ended_in_the_report() -> None:
    with running_service(DRAIN_DELAY="0.3", SHUTDOWN_TIMEOUT="10") as service:
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            for _ in range(2):
                await stub.Echo(echo_pb2.EchoRequest(message="a"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError, match="INVALID_ARGUMENT"):
                await stub.Echo(echo_pb2.EchoRequest(message="a", delay_ms=-1), timeout=5)
            stream = stub.EchoStream(echo_pb2.EchoStreamRequest(message="s", delay_ms=50))
            assert isinstance(await stream.read(), echo_pb2.EchoResponse)

            samples = await asyncio.to_thread(scrape, service)
            handled = "grpc_server_handled_total"
            assert samples.get(handled, grpc_method=ECHO, grpc_code="OK") == 2
            assert samples.get(handled, grpc_method=ECHO, grpc_code="INVALID_ARGUMENT") == 1
            assert samples.get("grpc_server_handling_seconds_count", grpc_method=ECHO) == 3
            assert samples.get("grpc_server_open_streams") == 1
            assert samples.get("grpc_server_in_flight") == 0

            service.signal(signal.SIGTERM)
            code = None
            try:
                while await stream.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as error:
                code = error.code()
            assert code == grpc.StatusCode.UNAVAILABLE
        assert service.wait_exit(timeout=15) == 0, service.output()

    [report] = service.events("shutdown_complete")
    assert report["drained"]["grpc"] == {"rpcs_in_flight_at_close": 0, "streams_ended": 1}
    access = [(e["method"], e["status"]) for e in service.events("grpc_request")]
    assert access == [
        (ECHO, "OK"),
        (ECHO, "OK"),
        (ECHO, "INVALID_ARGUMENT"),
        (ECHO_STREAM, "UNAVAILABLE"),
    ]
    assert all(e["request_id"] for e in service.events("grpc_request"))
