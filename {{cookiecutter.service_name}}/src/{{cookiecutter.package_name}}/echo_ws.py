"""`GET /v1/echo/ws`: a WebSocket that echoes every text message, the drain demo of a stream.

On shutdown it gets a close frame 1012 (service restart) rather than 1001 (going away): 1001 says
the endpoint is leaving, 1012 that it is restarting and a reconnect will find it again, which is
what a rolling restart is; clients treat both as a clean close, and 1012 tells them to reconnect.
"""

from __future__ import annotations

from aiohttp import WSCloseCode, WSMsgType, web

from .echo import MAX_MESSAGE_CHARS
from .http_streams import END_TIMEOUT, SHUTTING_DOWN, OpenStream

HEARTBEAT_S = 15.0
"""A ping every 15 s (a pong is due within half of it): keeps proxies' idle timeouts from
firing and finds clients that went away without closing."""

CLOSE_TIMEOUT_S = END_TIMEOUT * 0.8
"""How long the close handshake waits for the client's close frame before the connection is
closed anyway: inside the shutdown's END_TIMEOUT, so the socket closes itself, uncut."""


async def echo_websocket(request: web.Request, stream: OpenStream) -> web.WebSocketResponse:
    """Echo text messages; a binary message closes with 1003 (unsupported data)."""
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_S,
        timeout=CLOSE_TIMEOUT_S,
        max_msg_size=MAX_MESSAGE_CHARS * 4,  # UTF-8: at most 4 bytes a character
    )
    await ws.prepare(request)
    stream.serving(
        ws, lambda: ws.close(code=WSCloseCode.SERVICE_RESTART, message=SHUTTING_DOWN.encode())
    )
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            try:
                await ws.send_str(message.data)
            except ConnectionResetError:  # closing: the shutdown's close frame went out first
                break
            stream.message_sent()
        elif message.type is WSMsgType.BINARY:
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text messages only")
    return ws
