"""`GET /v1/echo/ws`: a WebSocket that echoes every text message, the drain demo of a stream.

On shutdown it gets a close frame 1012 (service restart) rather than 1001 (going away): 1001 says
the endpoint is leaving, 1012 that it is restarting and a reconnect will find it again, which is
what a rolling restart is; clients treat both as a clean close, and 1012 tells them to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSCloseCode, WSMsgType, web

from ..platform.http_streams import END_TIMEOUT, SHUTTING_DOWN, OpenStream
from .domain import MAX_MESSAGE_CHARS

HEARTBEAT_S = 15.0
"""A ping every 15 s (a pong is due within half of it): keeps proxies' idle timeouts from
firing and finds clients that went away without closing."""

CLOSE_TIMEOUT_S = END_TIMEOUT * 0.8
"""How long the shutdown's close handshake waits for the client's close frame; then the
connection is closed anyway. Inside the shutdown's END_TIMEOUT, so the socket closes itself."""

SHUTDOWN_CLOSE = WSCloseCode.SERVICE_RESTART.to_bytes(2, "big") + SHUTTING_DOWN.encode()
"""The close frame's payload: the code, then the reason."""


async def echo_websocket(request: web.Request, stream: OpenStream) -> web.WebSocketResponse:
    """Echo text messages; a binary message closes with 1003 (unsupported data)."""
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_S,
        timeout=CLOSE_TIMEOUT_S,
        max_msg_size=MAX_MESSAGE_CHARS * 4,  # UTF-8: at most 4 bytes a character
    )
    await ws.prepare(request)
    closing = asyncio.Event()
    done = asyncio.Event()

    async def end() -> None:
        """The close handshake, bounded. Only the close frame is sent from here: `ws.close()`
        while the handler reads would close the connection without waiting for the client's
        answer. The client's close frame ends the loop below, and aiohttp closes the
        connection; a client that does not answer is cut after CLOSE_TIMEOUT_S."""
        closing.set()
        await ws.send_frame(SHUTDOWN_CLOSE, WSMsgType.CLOSE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), CLOSE_TIMEOUT_S)
        await ws.close(code=WSCloseCode.SERVICE_RESTART, message=SHUTTING_DOWN.encode())

    stream.serving(ws, end)
    try:
        async for message in ws:
            if closing.is_set():
                continue  # after our close frame, nothing more is sent: wait for the client's
            if message.type is WSMsgType.TEXT:
                try:
                    await ws.send_str(message.data)
                except ConnectionResetError:  # the connection is closing: nothing to answer
                    break
                stream.message_sent()
            elif message.type is WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text messages only")
    finally:
        done.set()
    return ws
