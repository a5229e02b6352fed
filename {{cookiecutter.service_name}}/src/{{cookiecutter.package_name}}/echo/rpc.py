"""`EchoService` (proto/<package>/v1/echo.proto): the echo feature over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from typing_extensions import override

from ..platform.assembly import Assembly, Feature
from ..platform.grpc_server import GrpcService, GrpcServices
from ..v1 import echo_pb2, echo_pb2_grpc
from .domain import check_delay_ms, check_message, echo
from .settings import EchoSettings


class EchoService(echo_pb2_grpc.EchoServiceServicer):
    """The echo example over gRPC (see `domain.py`)."""

    def __init__(self, max_delay_ms: int) -> None:
        self._max_delay_ms = max_delay_ms

    @override
    async def Echo(
        self,
        request: echo_pb2.EchoRequest,
        context: grpc.aio.ServicerContext[echo_pb2.EchoRequest, echo_pb2.EchoResponse],
    ) -> echo_pb2.EchoResponse:
        message = check_message(request.message)
        delay_ms = check_delay_ms(request.delay_ms, self._max_delay_ms)
        return echo_pb2.EchoResponse(message=await echo(message, delay_ms), sequence=1)

    @override
    async def EchoStream(
        self,
        request: echo_pb2.EchoStreamRequest,
        context: grpc.aio.ServicerContext[echo_pb2.EchoStreamRequest, echo_pb2.EchoResponse],
    ) -> AsyncIterator[echo_pb2.EchoResponse]:
        message = check_message(request.message)
        delay_ms = check_delay_ms(request.delay_ms, self._max_delay_ms)
        sequence = 0
        while request.count == 0 or sequence < request.count:
            sequence += 1
            yield echo_pb2.EchoResponse(message=await echo(message, delay_ms), sequence=sequence)


def echo_service(max_delay_ms: int) -> GrpcService:
    def register(server: grpc.aio.Server) -> str:
        echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoService(max_delay_ms), server)
        return str(echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name)

    return register


def _wire(assembly: Assembly) -> None:
    max_delay_ms = assembly.config[EchoSettings].max_delay_ms
    assembly[GrpcServices].append(echo_service(max_delay_ms))


ECHO_RPC = Feature("echo_rpc", wire=_wire)
"""The echo feature's RPCs: list it after the gRPC server."""
