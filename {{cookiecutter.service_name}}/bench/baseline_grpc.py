"""Baseline: the smallest grpc.aio echo server, with the library's defaults.

`python -m bench.baseline_grpc serve PORT` serves the service's `EchoService/Echo` (the same
generated stubs, none of the service's per-call tracking, health or lifecycle).
`python -m bench.baseline_grpc frame FILE` writes one gRPC request frame for h2load;
`python -m bench.baseline_grpc check TARGET` makes one Echo call and exits 0 if it succeeds.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from typing_extensions import override

from {{ cookiecutter.package_name }}.v1 import echo_pb2, echo_pb2_grpc

SERVICE = echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name
ECHO_PATH = f"/{SERVICE}/Echo"
MESSAGE = "hello"


class Echo(echo_pb2_grpc.EchoServiceServicer):
    @override
    async def Echo(
        self,
        request: echo_pb2.EchoRequest,
        context: grpc.aio.ServicerContext[echo_pb2.EchoRequest, echo_pb2.EchoResponse],
    ) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(message=request.message)

    @override
    async def EchoStream(
        self,
        request: echo_pb2.EchoStreamRequest,
        context: grpc.aio.ServicerContext[echo_pb2.EchoStreamRequest, echo_pb2.EchoResponse],
    ) -> AsyncIterator[echo_pb2.EchoResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the baseline")
        yield echo_pb2.EchoResponse()  # unreachable: makes this an async generator


async def serve(port: int) -> None:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def frame() -> bytes:
    """A length-prefixed, uncompressed gRPC message: what h2load sends as the request body."""
    payload = echo_pb2.EchoRequest(message=MESSAGE, delay_ms=0).SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


async def check(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        reply = await stub.Echo(echo_pb2.EchoRequest(message=MESSAGE), timeout=5)
        if reply.message != MESSAGE:
            raise SystemExit(f"unexpected reply {reply!r}")


def main() -> None:
    command, argument = sys.argv[1], sys.argv[2]
    if command == "serve":
        asyncio.run(serve(int(argument)))
    elif command == "frame":
        Path(argument).write_bytes(frame())
    elif command == "check":
        asyncio.run(check(argument))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
