"""The HTTP API in-process: routes, validation, JSON errors, request ids, drain behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from {{ cookiecutter.package_name }}.echo import routes as echo_module
from {{ cookiecutter.package_name }}.echo import ws as echo_ws
from {{ cookiecutter.package_name }}.echo.routes import echo_routes
from {{ cookiecutter.package_name }}.platform.errors import DEPENDENCY_FAILED
from {{ cookiecutter.package_name }}.platform.http_server import create_app
from {{ cookiecutter.package_name }}.platform.inflight import InFlight
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.settings import Settings

from .support import WITH_DETAIL

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def in_flight() -> InFlight:
    return InFlight()


@pytest.fixture
async def client(readiness: Readiness, in_flight: InFlight) -> AsyncIterator[Client]:
    settings = Settings(max_request_body_bytes=1024)
    app = create_app(settings, readiness, in_flight, [echo_routes(5000)])
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_livez_is_always_ok(client: Client, readiness: Readiness) -> None:
    assert (await client.get("/livez")).status == 200
    await readiness.shut_down()
    assert (await client.get("/livez")).status == 200


async def test_readyz_follows_readiness(client: Client, readiness: Readiness) -> None:
    starting = await client.get("/readyz")
    assert starting.status == 503
    assert await starting.json() == {"status": "not ready", "reason": "starting"}
    await readiness.mark_started()
    assert (await client.get("/readyz")).status == 200
    await readiness.waiting_for("postgres")
    waiting = await client.get("/readyz")
    assert (waiting.status, (await waiting.json())["reason"]) == (503, "waiting for postgres")
    await readiness.connected("postgres")
    await readiness.shut_down()
    stopping = await client.get("/readyz")
    assert (stopping.status, (await stopping.json())["reason"]) == (503, "shutting down")


async def test_echo_get_and_post(client: Client) -> None:
    got = await client.get("/v1/echo", params={"msg": "héllo", "delay_ms": "10"})
    assert (got.status, await got.json()) == (200, {"msg": "héllo"})
    posted = await client.post("/v1/echo", json={"msg": "hi", "delay_ms": 0})
    assert (posted.status, await posted.json()) == (200, {"msg": "hi"})
    assert (await (await client.get("/v1/echo")).json()) == {"msg": ""}


@pytest.mark.parametrize("delay", ["abc", "-1", "5001", "1.5", "", "1" * 40, "0x10"])
async def test_bad_delay_is_400_naming_the_field(client: Client, delay: str) -> None:
    response = await client.get("/v1/echo", params={"msg": "x", "delay_ms": delay})
    body = await response.json()
    assert response.status == 400
    assert body["field"] == "delay_ms"
    assert body["status"] == 400


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"delay_ms": true}', "delay_ms"),
        (b'{"delay_ms": 2.5}', "delay_ms"),
        (b'{"msg": 5}', "msg"),
        (b'{"msg": "' + b"x" * 900 + b'", "delay_ms": -3}', "delay_ms"),
    ],
)
async def test_bad_json_body_is_400(client: Client, payload: bytes, field: str) -> None:
    headers = {"Content-Type": "application/json"}
    response = await client.post("/v1/echo", data=payload, headers=headers)
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_message_too_long_is_400(client: Client) -> None:
    response = await client.get("/v1/echo", params={"msg": "x" * 5000})
    assert (response.status, (await response.json())["field"]) == (400, "msg")


async def test_errors_are_json(client: Client) -> None:
    missing = await client.get("/nope")
    assert (missing.status, (await missing.json())["error"]) == (404, "Not Found")
    wrong = await client.delete("/v1/echo")
    assert wrong.status == 405
    assert (await wrong.json())["status"] == 405
    assert "GET" in wrong.headers["Allow"]
    too_big = await client.post(
        "/v1/echo", data=b"x" * 4096, headers={"Content-Type": "application/json"}
    )
    assert too_big.status == 413
    assert "1024" in (await too_big.json())["error"]


async def test_request_id_echoed_or_generated(client: Client) -> None:
    given = await client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/livez")
    assert len(generated.headers["X-Request-ID"]) == 32
    hostile = await client.get("/livez", headers={"X-Request-ID": "a b\tc" + "x" * 300})
    assert hostile.headers["X-Request-ID"] != "a b\tc" + "x" * 300
    assert (await client.get("/nope", headers={"X-Request-ID": "r-404"})).headers[
        "X-Request-ID"
    ] == "r-404"


async def test_keep_alive_until_shutdown_then_connection_close(
    client: Client, readiness: Readiness
) -> None:
    await readiness.mark_started()
    assert "Connection" not in (await client.get("/livez")).headers
    await readiness.shut_down()
    assert (await client.get("/livez")).headers["Connection"].lower() == "close"


async def test_in_flight_requests_are_tracked_by_route(client: Client, in_flight: InFlight) -> None:
    call = asyncio.ensure_future(client.get("/v1/echo", params={"delay_ms": "300"}))
    for _ in range(100):
        if len(in_flight):
            break
        await asyncio.sleep(0.01)
    [task] = in_flight.tasks()
    assert task.get_name().startswith("http GET /v1/echo request_id=")
    assert (await call).status == 200
    await asyncio.wait_for(in_flight.wait_idle(), 1)


@pytest.mark.parametrize(
    ("error", "status", "title", "detail", "event"),
    [
        (
            RuntimeError("password=hunter2 in a driver's message"),
            500,
            "Internal Server Error",
            "internal server error",
            "http_unhandled_error",
        ),
        # A dependency refusing (asyncpg opening a connection to a database that is down) is a
        # ConnectionError too, but not the client's: a 503 (a retry can succeed), logged, never
        # "closed by the client".
        (
            ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432) hunter2"),
            503,
            "Service Unavailable",
            DEPENDENCY_FAILED,
            "http_dependency_failed",
        ),
    ],
    ids=["runtime-error", "dependency-refused"],
)
async def test_an_unexpected_error_is_generic_with_the_request_id_and_no_internals(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
    title: str,
    detail: str,
    event: str,
) -> None:
    """The exception's text (a pretend driver message with a secret) stays in the log."""

    async def broken(message: str, delay_ms: int) -> str:
        raise error

    monkeypatch.setattr(echo_module, "echo", broken)
    with capture_logs(processors=WITH_DETAIL) as logs:
        response = await client.get(
            "/v1/echo", params={"delay_ms": "0"}, headers={"X-Request-ID": "rid-500"}
        )
        text = await response.text()
    assert response.status == status
    assert response.headers["X-Request-ID"] == "rid-500"
    assert await response.json() == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "rid-500",
        "error": detail,
    }
    assert "hunter2" not in text + str(response.headers)
    [logged] = [entry for entry in logs if entry["event"] == event]
    assert (logged["request_id"], logged["log_level"]) == ("rid-500", "error")
    # The detail is in the log, with the request id.
    assert "hunter2" in logged.get("exception", "") + logged.get("error", "")


async def test_the_websocket_pings_its_client(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server heartbeats (`HEARTBEAT_S`, 15 s in service; here 0.1 s): a ping the client answers
    keeps the socket open, one it leaves unanswered (a client gone without closing) ends it."""
    monkeypatch.setattr(echo_ws, "HEARTBEAT_S", 0.1)
    async with client.ws_connect("/v1/echo/ws", autoping=False) as ws:
        for _ in range(2):
            ping = await ws.receive(timeout=2)
            assert ping.type is WSMsgType.PING, ping
            await ws.pong(ping.data)
        await ws.send_str("still here")
        reply = await ws.receive(timeout=2)
        while reply.type is WSMsgType.PING:
            await ws.pong(reply.data)
            reply = await ws.receive(timeout=2)
        assert (reply.type, reply.data) == (WSMsgType.TEXT, "still here")
        while (unanswered := await ws.receive(timeout=2)).type is WSMsgType.PING:
            pass  # no pong: the server gives up within half the heartbeat
        assert unanswered.type in {WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING}, unanswered
