"""The real service as a subprocess: SIGTERM under HTTP load, deadlines, forced exit, bad config.

Time bounds are generous on purpose (shared, noisy machines); the benchmarks hold the tight ones.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.error

import aiohttp
import pytest

from .metrics_support import wait_in_flight
from .service import PACKAGE, Service, free_port, http_get, running_service


async def _echo(
    session: aiohttp.ClientSession, url: str, msg: str, delay_ms: int
) -> tuple[int, str, str]:
    async with session.get(f"{url}/v1/echo", params={"msg": msg, "delay_ms": str(delay_ms)}) as r:
        return r.status, (await r.json())["msg"], r.headers.get("Connection", "")


async def test_in_flight_requests_complete_across_sigterm() -> None:
    with running_service(DRAIN_DELAY="0.5", SHUTDOWN_TIMEOUT="10") as service:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            calls = [
                asyncio.create_task(_echo(session, service.url, f"m{i}", 1500)) for i in range(40)
            ]
            await wait_in_flight(service, "http_server_requests_in_flight", 40)
            service.signal(signal.SIGTERM)
            results = await asyncio.gather(*calls)
        assert [status for status, _, _ in results] == [200] * 40
        assert [msg for _, msg, _ in results] == [f"m{i}" for i in range(40)]
        # Replies sent while draining tell keep-alive clients to reconnect elsewhere.
        assert {conn.lower() for _, _, conn in results} == {"close"}
        assert service.wait_exit(timeout=15) == 0, service.output()
    phases = [event["phase"] for event in service.events("shutdown_phase")]
    assert phases == [
        "readiness_off",
        "drain_delay",
        "close_listeners",
        "end_streams",
        "drain_in_flight",
        "stop_tasks",
        "close",
    ]


async def test_readiness_off_at_once_new_connections_until_drain_delay_ends() -> None:
    with running_service(DRAIN_DELAY="3", SHUTDOWN_TIMEOUT="15") as service:
        async with aiohttp.ClientSession() as session:
            # keeps the process alive after the listeners close
            long_call = asyncio.create_task(_echo(session, service.url, "long", 5000))
            await wait_in_flight(service, "http_server_requests_in_flight", 1)
            signalled = service.signal(signal.SIGTERM)
            service.wait_for_event("shutdown_requested")

            status, body, headers = await asyncio.to_thread(http_get, f"{service.url}/readyz")
            assert (status, body["reason"]) == (503, "shutting down")
            assert headers["Connection"].lower() == "close"
            # Still serving, on new connections, during the drain delay.
            assert (await asyncio.to_thread(http_get, f"{service.url}/livez"))[0] == 200
            echoed = await asyncio.to_thread(http_get, f"{service.url}/v1/echo?msg=during")
            assert echoed[:2] == (200, {"msg": "during"})
            assert time.monotonic() - signalled < 3, "checks must run inside the drain delay"

            await asyncio.sleep(max(0.0, signalled + 3.5 - time.monotonic()))
            with pytest.raises(urllib.error.URLError, match="refused"):
                await asyncio.to_thread(http_get, f"{service.url}/livez", 2.0)
            assert await long_call == (200, "long", "close")
        assert service.wait_exit(timeout=15) == 0, service.output()


async def test_handler_past_the_deadline_is_cancelled_and_named() -> None:
    # The outbox relay (with the items example) polls once at start, then waits: it is idle at
    # the deadline however slow a loaded machine makes its poll.
    env = {"OUTBOX_POLL_INTERVAL": "60"}
    with running_service(DRAIN_DELAY="0.5", SHUTDOWN_TIMEOUT="3", **env) as service:
        async with aiohttp.ClientSession() as session:
            stuck = asyncio.create_task(_echo(session, service.url, "stuck", 30_000))
            await wait_in_flight(service, "http_server_requests_in_flight", 1)
            signalled = service.signal(signal.SIGTERM)
            code = await asyncio.to_thread(service.wait_exit, 15)
            elapsed = time.monotonic() - signalled
            with pytest.raises(aiohttp.ClientError):
                await stuck
    assert code == 4, service.output()
    assert elapsed < 3 + 2.0, f"exited {elapsed:.2f}s after SIGTERM, budget is 3s"
    unfinished = service.events("task_unfinished")
    named = [event for event in unfinished if "/v1/echo" in event["task"]]
    assert named, service.output()
    assert any("/echo/" in frame for frame in named[0]["stack"]), named[0]
    # Only work is named: components waiting for their next turn (the outbox relay between two
    # polls) are not hung.
    assert not [event for event in unfinished if event["task"].startswith("outbox")], unfinished
    assert service.events("shutdown_complete")[0]["exit_code"] == 4


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_exits_at_once(second: signal.Signals) -> None:
    with running_service(DRAIN_DELAY="8", SHUTDOWN_TIMEOUT="15") as service:
        service.signal(signal.SIGTERM)
        service.wait_for_event("shutdown_requested")
        sent = service.signal(second)
        code = service.wait_exit(timeout=10)
        assert time.monotonic() - sent < 2.0
    assert code == 5, service.output()
    assert service.events("forced_exit")


def test_idle_service_with_no_drain_delay_exits_promptly() -> None:
    with running_service(DRAIN_DELAY="0", SHUTDOWN_TIMEOUT="10") as service:
        sent = service.signal(signal.SIGINT)
        code = service.wait_exit(timeout=10)
        elapsed = time.monotonic() - sent
    assert code == 0, service.output()
    assert elapsed < 2.0, f"idle shutdown took {elapsed:.2f}s"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HTTP_PORT": "eighty"}, "HTTP_PORT"),
        ({"HTTP_PORT": "70000"}, "HTTP_PORT"),
        ({"DRAIN_DELAY": "-1"}, "DRAIN_DELAY"),
        ({"DRAIN_DELAY": "10", "SHUTDOWN_TIMEOUT": "5"}, "SHUTDOWN_TIMEOUT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"HTTP_HEADER_TIMEOUT": "0"}, "HTTP_HEADER_TIMEOUT"),
        ({"HTTP_BODY_TIMEOUT": "-1"}, "HTTP_BODY_TIMEOUT"),
        ({"HTTP_KEEPALIVE_TIMEOUT": "soon"}, "HTTP_KEEPALIVE_TIMEOUT"),
        ({"HTTP_DRAIN_READ_TIMEOUT": "-0.5"}, "HTTP_DRAIN_READ_TIMEOUT"),
        ({"HTTP_MAX_IN_FLIGHT": "0"}, "HTTP_MAX_IN_FLIGHT"),
        ({"ECHO_MAX_DELAY_MS": "-1"}, "ECHO_MAX_DELAY_MS"),
{%- if cookiecutter.use_postgres == "yes" %}
        ({"CACHE_TTL_SECONDS": "0"}, "CACHE_TTL_SECONDS"),
{%- endif %}
{%- if cookiecutter.use_grpc == "yes" %}
        ({"GRPC_MAX_IN_FLIGHT": "0"}, "GRPC_MAX_IN_FLIGHT"),
        ({"GRPC_MAX_CONCURRENT_RPCS": "256"}, "GRPC_MAX_CONCURRENT_RPCS"),
{%- endif %}
    ],
)
def test_invalid_configuration_exits_2_before_binding(env: dict[str, str], named: str) -> None:
    service = Service(**env)
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE], env=service.env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result
    assert named in result.stderr
    assert "listening" not in result.stdout


def test_port_in_use_fails_start_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = Service(HTTP_PORT=str(taken.getsockname()[1]), GRPC_PORT=str(free_port()))
        service.start()
        try:
            code = service.wait_exit(timeout=30)
        finally:
            service.kill()
    assert code == 3, service.output()
    [failure] = service.events("start_failed")
    assert failure["component"] == "http"
    assert "address already in use" in failure["error"].lower()
