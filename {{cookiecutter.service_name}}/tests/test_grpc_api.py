"""The gRPC API in-process: echo, validation, deadlines, request ids, health, reflection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from {{ cookiecutter.package_name }}.echo import rpc as echo_rpc
from {{ cookiecutter.package_name }}.echo.rpc import echo_service
from {{ cookiecutter.package_name }}.platform.grpc_server import GrpcServer
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.v1 import echo_pb2, echo_pb2_grpc

from .service import AllSettings, free_port
from .support import WITH_DETAIL


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def server(readiness: Readiness) -> AsyncIterator[GrpcServer]:
    settings = AllSettings(grpc_host="127.0.0.1", grpc_port=free_port())
    component = GrpcServer(settings, settings, readiness, [echo_service(5000)])
    await component.start()
    yield component
    await component.close()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
        yield open_channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> echo_pb2_grpc.EchoServiceAsyncStub:
    return echo_pb2_grpc.EchoServiceStub(channel)


async def test_echo_replies_and_echoes_request_id(stub: echo_pb2_grpc.EchoServiceAsyncStub) -> None:
    """Unary calls return the id in the trailing metadata (the batch that ends the call)."""
    call = stub.Echo(
        echo_pb2.EchoRequest(message="hi", delay_ms=5), metadata=(("x-request-id", "rid-1"),)
    )
    assert (await call).message == "hi"
    assert ("x-request-id", "rid-1") in list(await call.trailing_metadata() or ())
    generated = stub.Echo(echo_pb2.EchoRequest(message="x"))
    await generated
    metadata = dict(await generated.trailing_metadata() or ())
    assert len(str(metadata["x-request-id"])) == 32


async def test_failed_call_returns_its_request_id(
    stub: echo_pb2_grpc.EchoServiceAsyncStub,
) -> None:
    call = stub.Echo(
        echo_pb2.EchoRequest(message="x", delay_ms=-1), metadata=(("x-request-id", "r-bad"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("x-request-id", "r-bad") in list(error.value.trailing_metadata() or ())


async def test_stream_sends_request_id_before_the_first_reply(
    stub: echo_pb2_grpc.EchoServiceAsyncStub,
) -> None:
    request = echo_pb2.EchoStreamRequest(message="s", count=2)
    stream = stub.EchoStream(request, metadata=(("x-request-id", "rid-s"),))
    assert ("x-request-id", "rid-s") in list(await stream.initial_metadata() or ())
    assert len([reply async for reply in stream]) == 2
    assert ("x-request-id", "rid-s") in list(await stream.trailing_metadata() or ())


@pytest.mark.parametrize(
    "request_",
    [
        echo_pb2.EchoRequest(message="x", delay_ms=-1),
        echo_pb2.EchoRequest(message="x", delay_ms=5001),
        echo_pb2.EchoRequest(message="x" * 5000),
    ],
)
async def test_bad_input_is_invalid_argument(
    stub: echo_pb2_grpc.EchoServiceAsyncStub, request_: echo_pb2.EchoRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Echo(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("delay_ms" in (error.value.details() or "")) or ("msg" in (error.value.details() or ""))


async def test_deadline_is_honoured_and_the_handler_cancelled(
    stub: echo_pb2_grpc.EchoServiceAsyncStub, server: GrpcServer
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Echo(echo_pb2.EchoRequest(message="x", delay_ms=3000), timeout=0.2)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):
        if not server.unfinished():
            break
        await asyncio.sleep(0.01)
    assert server.unfinished() == []


async def test_health_mirrors_readiness(channel: grpc.aio.Channel, readiness: Readiness) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    names = ["", "{{ cookiecutter.package_name }}.v1.EchoService"]

    async def statuses() -> list[int]:
        replies = [await health.Check(health_pb2.HealthCheckRequest(service=n)) for n in names]
        return [int(reply.status) for reply in replies]

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert await statuses() == [not_serving] * 2
    await readiness.mark_started()
    assert await statuses() == [serving] * 2
    await readiness.waiting_for("redis")
    assert await statuses() == [not_serving] * 2
    await readiness.connected("redis")
    await readiness.shut_down()
    assert await statuses() == [not_serving] * 2


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in reflection.ServerReflectionInfo(ask()):
        names = {service.name for service in reply.list_services_response.service}
        break
    assert "{{ cookiecutter.package_name }}.v1.EchoService" in names
    assert "grpc.health.v1.Health" in names


async def test_stream_with_count_ends_ok(stub: echo_pb2_grpc.EchoServiceAsyncStub) -> None:
    replies = [r async for r in stub.EchoStream(echo_pb2.EchoStreamRequest(message="s", count=3))]
    assert [(r.message, r.sequence) for r in replies] == [("s", 1), ("s", 2), ("s", 3)]


async def test_end_streams_ends_open_streams_with_unavailable(
    stub: echo_pb2_grpc.EchoServiceAsyncStub, server: GrpcServer
) -> None:
    stream = stub.EchoStream(echo_pb2.EchoStreamRequest(message="s", delay_ms=50))
    assert (await stream.read()) != grpc.aio.EOF
    await asyncio.wait_for(server.end_streams(), 5)
    with pytest.raises(grpc.aio.AioRpcError) as ended:  # noqa: PT012 - read until the end
        while await stream.read() is not grpc.aio.EOF:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended.value.details() == "server shutting down"
    # a stream opened after that ends at once, the same way
    late = stub.EchoStream(echo_pb2.EchoStreamRequest(message="s", delay_ms=50))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await late.read()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("method", ["Echo", "EchoStream"])
async def test_bytes_that_are_not_a_message_are_invalid_argument(
    channel: grpc.aio.Channel, method: str
) -> None:
    """No serializer on the client side: the bytes go out as they are (a truncated varint)."""
    path = f"/{echo_pb2.DESCRIPTOR.services_by_name['EchoService'].full_name}/{method}"

    def raw(data: bytes) -> bytes:
        return data

    async def call_with_garbage() -> None:
        if method == "Echo":
            await channel.unary_unary(path, raw, raw)(b"\x08\xff\xff")
        else:
            async for _ in channel.unary_stream(path, raw, raw)(b"\x08\xff\xff"):
                pass

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call_with_garbage()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("request: not a valid message")


async def test_overload_is_resource_exhausted_and_health_still_answers(
    readiness: Readiness,
) -> None:
    settings = AllSettings(grpc_host="127.0.0.1", grpc_port=free_port(), grpc_max_in_flight=2)
    server = GrpcServer(settings, settings, readiness, [echo_service(5000)])
    await server.start()
    await readiness.mark_started()
    shed_before = REGISTRY.get_sample_value("server_requests_shed_total", {"server": "grpc"}) or 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            busy = [stub.Echo(echo_pb2.EchoRequest(message="b", delay_ms=1000)) for _ in range(2)]
            await asyncio.sleep(0.3)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Echo(echo_pb2.EchoRequest(message="x"))
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert [(await call).message for call in busy] == ["b", "b"]
            assert (await stub.Echo(echo_pb2.EchoRequest(message="after"))).message == "after"
    finally:
        await server.close()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    [(key, _)] = list(refused.value.trailing_metadata() or ())
    assert key == "x-request-id"
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    shed = REGISTRY.get_sample_value("server_requests_shed_total", {"server": "grpc"})
    assert shed == shed_before + 1


async def test_streams_beyond_the_ceiling_are_resource_exhausted(readiness: Readiness) -> None:
    settings = AllSettings(
        grpc_host="127.0.0.1",
        grpc_port=free_port(),
        grpc_max_in_flight=1,
        grpc_max_concurrent_rpcs=3,
    )
    server = GrpcServer(settings, settings, readiness, [echo_service(5000)])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            request = echo_pb2.EchoStreamRequest(message="s", delay_ms=50)
            streams = [stub.EchoStream(request) for _ in range(3)]  # the ceiling: 3 RPCs
            for stream in streams:
                reply = await stream.read()
                assert isinstance(reply, echo_pb2.EchoResponse)
            extra = stub.EchoStream(echo_pb2.EchoStreamRequest(message="s", delay_ms=50))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await extra.read()
            for stream in streams:
                stream.cancel()
    finally:
        await server.close()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_bad_input_carries_the_rich_status_and_the_request_id(
    stub: echo_pb2_grpc.EchoServiceAsyncStub,
) -> None:
    call = stub.Echo(
        echo_pb2.EchoRequest(message="x", delay_ms=-1), metadata=(("x-request-id", "r-rich"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    status = rpc_status.from_call(error.value)  # also checks code and message agree
    assert status is not None
    assert status.code == code_pb2.INVALID_ARGUMENT
    [detail] = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    violations = [(v.field, v.description) for v in bad_request.field_violations]
    assert violations == [("delay_ms", "must be between 0 and 5000")]
    assert ("x-request-id", "r-rich") in list(error.value.trailing_metadata() or ())


async def test_an_unexpected_error_is_internal_with_the_request_id_and_no_internals(
    stub: echo_pb2_grpc.EchoServiceAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exception's text (here a pretend driver message with a secret) stays in the log."""

    async def broken(message: str, delay_ms: int) -> str:
        raise RuntimeError("password=hunter2 in a driver's message")

    monkeypatch.setattr(echo_rpc, "echo", broken)
    metadata = (("x-request-id", "rid-internal"),)

    async def unary() -> None:
        await stub.Echo(echo_pb2.EchoRequest(message="x"), metadata=metadata)

    async def stream() -> None:
        request = echo_pb2.EchoStreamRequest(message="x", count=1)
        async for _ in stub.EchoStream(request, metadata=metadata):
            pass

    for call in (unary, stream):
        with (
            capture_logs(processors=WITH_DETAIL) as logs,
            pytest.raises(grpc.aio.AioRpcError) as failed,
        ):
            await call()
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert failed.value.details() == "internal error (request id rid-internal)"
        # No rich status (grpc-status-details-bin) and no other trailer: the request id only.
        assert rpc_status.from_call(failed.value) is None
        assert list(failed.value.trailing_metadata() or ()) == [("x-request-id", "rid-internal")]
        assert "hunter2" not in str(failed.value) + repr(failed.value.initial_metadata())
        [logged] = [entry for entry in logs if entry["event"] == "grpc_unhandled_error"]
        assert (logged["request_id"], logged["log_level"]) == ("rid-internal", "error")
        assert "hunter2" in logged["exception"]  # the detail is in the log, with the request id
