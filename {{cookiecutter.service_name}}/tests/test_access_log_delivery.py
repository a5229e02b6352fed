"""No access log line is lost: lines wait in memory for a moment (logs.LogOutput), and every exit
path writes them out, the forced one of a second signal included."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from .service import Service, running_service

REQUESTS = 1000


async def _echo_many(service: Service, count: int) -> None:
    """`count` requests on keep-alive connections, 16 at a time; each must succeed."""
    limit = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        async with limit, session.get(f"{service.url}/v1/echo", params={"msg": f"m{index}"}) as r:
            assert r.status == 200, await r.text()

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, index) for index in range(count)))


def _echo_lines(service: Service) -> list[dict[str, object]]:
    return [line for line in service.events("http_request") if line["route"] == "/v1/echo"]


async def test_every_line_reaches_stdout_across_sigterm() -> None:
    with running_service(DRAIN_DELAY="0.1", SHUTDOWN_TIMEOUT="10") as service:
        await _echo_many(service, REQUESTS)
        service.signal(signal.SIGTERM)  # right away: the last lines are still in memory
        assert service.wait_exit(timeout=20) == 0, service.output()
    lines = _echo_lines(service)
    assert len(lines) == REQUESTS, service.output()
    assert len({line["request_id"] for line in lines}) == REQUESTS
    assert {line["status"] for line in lines} == {200}


async def test_every_line_reaches_stdout_across_a_second_signal() -> None:
    """The forced exit (exit code 5) writes what waits in memory before it leaves."""
    with running_service(DRAIN_DELAY="5", SHUTDOWN_TIMEOUT="20") as service:
        await _echo_many(service, REQUESTS)
        service.signal(signal.SIGTERM)
        service.signal(signal.SIGINT)
        assert service.wait_exit(timeout=20) == 5, service.output()
    assert len(_echo_lines(service)) == REQUESTS, service.output()
    assert service.events("forced_exit"), service.output()
