"""`GET|POST /v1/echo` and the `GET /v1/echo/ws` WebSocket: the echo feature's HTTP routes."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from ..platform.http_server import HttpRoutes, Routes, json_reply, read_json_object
from ..platform.openapi import Doc, parameter
from .domain import MAX_MESSAGE_CHARS, check_delay_ms, check_message, echo
from .ws import echo_websocket


class EchoBody(BaseModel):
    """`POST /v1/echo`'s body, as documented (checked by `domain.py`, shared with gRPC)."""

    msg: str = Field(default="", max_length=MAX_MESSAGE_CHARS)
    delay_ms: int = Field(default=0, ge=0, description="At most ECHO_MAX_DELAY_MS.")


class EchoReply(BaseModel):
    msg: str


ECHO_GET = Doc(
    "The message back, after `delay_ms`.",
    {200: ("The message.", EchoReply), 400: ("A bad parameter, named.", None)},
    parameters=(
        parameter("msg", "query", {"type": "string", "maxLength": MAX_MESSAGE_CHARS}, "Echoed."),
        parameter("delay_ms", "query", {"type": "integer", "minimum": 0}, "Wait this long."),
    ),
)
ECHO_WS = Doc(
    "A WebSocket that echoes every text message; closed with 1012 when the service shuts down.",
    {400: ("Not a WebSocket upgrade.", None)},
    streams={101: ("Switching to the WebSocket protocol.", None)},
)
ECHO_POST = Doc(
    "The message back, after `delay_ms`.",
    {200: ("The message.", EchoReply), 400: ("A bad field, named.", None)},
    body=EchoBody,
)


def echo_routes(max_delay_ms: int) -> HttpRoutes:
    """The echo routes; `delay_ms` is refused above `max_delay_ms`."""

    async def echo_get(request: web.Request) -> web.Response:
        """`GET /v1/echo?msg=TEXT&delay_ms=N` answers `{"msg": TEXT}` after N milliseconds."""
        query = request.query
        message = check_message(query.get("msg", ""))
        delay_ms = query.get("delay_ms")
        if delay_ms is None:
            return json_reply({"msg": message})
        return json_reply({"msg": await echo(message, check_delay_ms(delay_ms, max_delay_ms))})

    async def echo_post(request: web.Request) -> web.Response:
        """`POST /v1/echo` with `{"msg": TEXT, "delay_ms": N}`: the same, for JSON bodies."""
        body = await read_json_object(request)
        message = check_message(body.get("msg", ""))
        delay_ms = check_delay_ms(body.get("delay_ms", 0), max_delay_ms)
        return json_reply({"msg": await echo(message, delay_ms)})

    def add(routes: Routes) -> None:
        routes.get("/v1/echo", echo_get, doc=ECHO_GET)
        routes.post("/v1/echo", echo_post, doc=ECHO_POST)
        routes.stream("/v1/echo/ws", "websocket", echo_websocket, doc=ECHO_WS)

    return add
