"""The real service as a subprocess: WebSockets (`/v1/echo/ws`) across SIGTERM.

They keep echoing through the drain delay, new ones are accepted until the listeners close, and
every one gets its close frame (1012) right after that; a client that never answers the close
handshake is closed after its bound, one that never reads is cut, and neither changes the exit
code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from {{ cookiecutter.package_name }}.echo.ws import CLOSE_TIMEOUT_S

from .metrics_support import scrape
from .service import Service, http_get, running_service

END_BOUND_S = 0.5
"""The contract: every stream is told to end within this of the listeners closing."""
CLOSE_FLUSH_S = {{ "2.0" if cookiecutter.use_tracing == "yes" else "0.0" }}
"""What the `close` phase may add: with tracing, its flush waits out its budget (the close reserve,
at most 2 s) when no collector answers, as in these tests."""


def log_time(event: dict[str, Any]) -> float:
    """A log line's timestamp as Unix time (the service writes UTC, ISO 8601)."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def end_streams_phase(service: Service) -> dict[str, Any]:
    [phase] = [e for e in service.events("shutdown_phase") if e["phase"] == "end_streams"]
    assert phase["outcome"] == "ok", phase
    return phase


def listeners_closed_at(service: Service) -> float:
    """When the close_listeners phase ended (Unix time): end_streams starts right then."""
    [phase] = [e for e in service.events("shutdown_phase") if e["phase"] == "close_listeners"]
    return log_time(phase)


async def echo_once(ws: aiohttp.ClientWebSocketResponse, text: str) -> str:
    await ws.send_str(text)
    reply = await asyncio.wait_for(ws.receive(), 5)
    assert reply.type is aiohttp.WSMsgType.TEXT, reply
    return str(reply.data)


async def close_frame(ws: aiohttp.ClientWebSocketResponse) -> tuple[aiohttp.WSMessage, float]:
    """The next message, which must be the server's close frame, and when it arrived."""
    message = await asyncio.wait_for(ws.receive(), 10)
    return message, time.time()


async def test_websockets_echo_through_the_drain_delay_then_get_1012() -> None:
    with running_service(DRAIN_DELAY="1.5", SHUTDOWN_TIMEOUT="10") as service:
        url = f"{service.url}/v1/echo/ws"
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(url) for _ in range(10)]
            for i, ws in enumerate(sockets):
                assert await echo_once(ws, f"before {i}") == f"before {i}"
            samples = await asyncio.to_thread(scrape, service)
            assert samples.get("http_server_open_streams", kind="websocket") == 10

            signalled = service.signal(signal.SIGTERM)
            service.wait_for_event("shutdown_requested")
            status, body, _ = await asyncio.to_thread(http_get, f"{service.url}/readyz")
            assert (status, body["reason"]) == (503, "shutting down")
            await asyncio.sleep(0.3)
            # Still flowing, and a new upgrade is accepted, during the drain delay.
            for i, ws in enumerate(sockets):
                assert await echo_once(ws, f"during {i}") == f"during {i}"
            late = await session.ws_connect(url)
            assert await echo_once(late, "late") == "late"
            sockets.append(late)
            assert time.monotonic() - signalled < 1.5, "checks must run inside the drain delay"

            closes = await asyncio.gather(*(close_frame(ws) for ws in sockets))
            # After the listeners closed, an upgrade is refused like any connection.
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.ws_connect(url)
        assert await asyncio.to_thread(service.wait_exit, 15) == 0, service.output()
        exited = time.monotonic() - signalled

    closed_at = listeners_closed_at(service)
    for message, received in closes:
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        assert message.data == aiohttp.WSCloseCode.SERVICE_RESTART
        assert message.extra == "server shutting down"
        assert received - closed_at < END_BOUND_S, (received - closed_at, service.output())
    bound = 1.5 + 2.0 + CLOSE_FLUSH_S
    assert exited < bound, f"exited {exited:.2f}s after SIGTERM, SHUTDOWN_TIMEOUT is 10s"
    # Every client answered the close frame: the handshakes ended well before their bound.
    assert end_streams_phase(service)["duration_s"] < CLOSE_TIMEOUT_S, service.output()
    [report] = service.events("shutdown_complete")
    assert report["drained"]["http"]["streams_ended"] == 11
    lines = service.events("http_stream")
    assert len(lines) == 11, service.output()
    assert {line["ended_by"] for line in lines} == {"shutdown"}
    assert sorted(line["messages_sent"] for line in lines) == [1] + [2] * 10
    assert all(line["kind"] == "websocket" and line["status"] == 101 for line in lines)


def stalled_websocket(port: int) -> socket.socket:
    """A WebSocket client that sends echo requests and never reads: the server's replies fill
    the socket buffers until its handler is stuck writing, where no close frame gets through."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/echo/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = b"x" * 4000
    # A masked text frame; the zero mask leaves the payload as it is.
    frame = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + bytes(4) + payload
    sock.setblocking(False)
    sent = 0
    for _ in range(5000):  # ~20 MB at most; the buffers fill long before
        try:
            sent += sock.send(frame[sent % len(frame) :])
        except BlockingIOError:
            time.sleep(0.05)
            try:
                sent += sock.send(frame[sent % len(frame) :])
            except BlockingIOError:
                return sock  # the server stopped reading: its writes are stuck
    raise AssertionError("the server kept reading a client that never reads")


async def test_a_client_that_never_answers_the_close_is_closed_after_the_bound() -> None:
    with running_service(DRAIN_DELAY="0.2", SHUTDOWN_TIMEOUT="10") as service:
        async with aiohttp.ClientSession() as session:
            polite = await session.ws_connect(f"{service.url}/v1/echo/ws")
            # autoclose=False: reads the close frame but never sends its own.
            silent = await session.ws_connect(f"{service.url}/v1/echo/ws", autoclose=False)
            assert await echo_once(polite, "p") == "p"
            assert await echo_once(silent, "s") == "s"
            signalled = service.signal(signal.SIGTERM)
            code = await asyncio.to_thread(service.wait_exit, 15)
            exited = time.monotonic() - signalled
            messages = [(await close_frame(ws))[0] for ws in (polite, silent)]
            after = await asyncio.wait_for(silent.receive(), 5)
    assert code == 0, service.output()
    for message in messages:
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.SERVICE_RESTART
    assert after.type is aiohttp.WSMsgType.CLOSED, "the server closed the silent one's connection"
    # The silent socket held the phase for its handshake's bound, and no longer; not cut.
    duration = end_streams_phase(service)["duration_s"]
    assert CLOSE_TIMEOUT_S - 0.05 <= duration < END_BOUND_S, service.output()
    assert not service.events("http_streams_cut"), service.output()
    assert exited < 0.2 + 3.0 + CLOSE_FLUSH_S, f"exited {exited:.2f}s after SIGTERM"


async def test_a_client_that_never_reads_is_cut_after_the_bound_and_exit_stays_0() -> None:
    with running_service(DRAIN_DELAY="0.2", SHUTDOWN_TIMEOUT="10") as service:
        stalled = await asyncio.to_thread(stalled_websocket, service.http_port)
        try:
            signalled = service.signal(signal.SIGTERM)
            code = await asyncio.to_thread(service.wait_exit, 15)
            exited = time.monotonic() - signalled
        finally:
            stalled.close()
    assert code == 0, service.output()
    # Not even the close frame gets through: the socket holds the phase for END_TIMEOUT, then
    # is cut; nothing waits longer.
    duration = end_streams_phase(service)["duration_s"]
    assert END_BOUND_S <= duration < END_BOUND_S + 0.5, service.output()
    assert service.events("http_streams_cut"), service.output()
    assert exited < 0.2 + 3.0 + CLOSE_FLUSH_S, f"exited {exited:.2f}s after SIGTERM"


async def test_a_websocket_the_client_closes_is_logged_and_counted() -> None:
    with running_service() as service:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{service.url}/v1/echo/ws")
            assert [await echo_once(ws, text) for text in ("a", "b")] == ["a", "b"]
            await ws.close()
        line = await asyncio.to_thread(service.wait_for_event, "http_stream")
        samples = await asyncio.to_thread(scrape, service)
    assert line["ended_by"] == "client"
    assert line["messages_sent"] == 2
    assert line["route"] == "/v1/echo/ws"
    assert line["request_id"]
    assert samples.get("http_server_open_streams", kind="websocket") == 0
    assert samples.get("http_server_streams_ended_total", kind="websocket", ended_by="client") == 1
    assert samples.get("http_server_stream_messages_sent_total", kind="websocket") == 2


async def test_websocket_upgrade_errors_answer_json() -> None:
    with running_service() as service:
        status, body, _ = await asyncio.to_thread(http_get, f"{service.url}/v1/echo/ws")
    assert status == 400, body
    assert body["status"] == 400
    assert "websocket" in body["error"].lower() or "upgrade" in body["error"].lower(), body
