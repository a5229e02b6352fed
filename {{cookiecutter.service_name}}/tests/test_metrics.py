"""Metrics, access logs, task stacks and the shutdown report.

The real service is started once, sent traffic, SIGUSR1 and SIGTERM, and its admin port scraped
before, during and after; the deadline-exceeded report is checked in-process (fast).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import aiohttp
import pytest
from structlog.testing import capture_logs
from typing_extensions import override

from {{ cookiecutter.package_name }}.platform.inflight import InFlight
from {{ cookiecutter.package_name }}.platform.lifecycle import (
    Component,
    ExitCode,
    Lifecycle,
)
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.settings import Settings

from .metrics_support import Samples, scrape
from .service import Service, running_service

SERVICE = "{{ cookiecutter.service_name }}"
ECHO = {"method": "GET", "route": "/v1/echo"}


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def _scrape_until(
    service: Service, check: Callable[[Samples], bool], what: str, seconds: float = 5.0
) -> Samples:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples = await asyncio.to_thread(scrape, service)
        if check(samples):
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds}s: {what}")


async def test_debug_tasks_is_off_by_default_and_sigusr1_still_logs_the_tasks() -> None:
    with running_service() as service:
        async with aiohttp.ClientSession() as session:
            assert await _get(session, f"{service.admin_url}/debug/tasks") == 404
            assert await _get(session, f"{service.admin_url}/metrics") == 200
            service.signal(signal.SIGUSR1)
            dump = await asyncio.to_thread(service.wait_for_event, "task_dump")
            assert any(task["task"] for task in dump["tasks"]), dump
            assert await _get(session, f"{service.admin_url}/debug/tasks") == 404


async def test_metrics_task_stacks_and_report_across_traffic_sigusr1_and_sigterm() -> None:
    with running_service(DRAIN_DELAY="0.5", SHUTDOWN_TIMEOUT="10", DEBUG_TASKS="true") as service:
        before = await asyncio.to_thread(scrape, service)
        assert before.get("lifecycle_phase", lifecycle_phase="serving") == 1
        [build] = [dict(key) for name, key in before.values if name == "service_build_info"]
        assert (build["service"], build["version"]) == (SERVICE, "0.1.0")
        async with aiohttp.ClientSession() as session:
            # The admin port is not the public port, and the other way round.
            assert await _get(session, f"{service.url}/metrics") == 404
            assert await _get(session, f"{service.url}/debug/tasks") == 404
            assert await _get(session, f"{service.admin_url}/v1/echo?msg=a") == 404
            assert await _get(session, f"{service.admin_url}/readyz") == 404

            for _ in range(3):
                assert await _get(session, f"{service.url}/v1/echo?msg=a") == 200
            assert await _get(session, f"{service.url}/v1/echo?delay_ms=-1") == 400
            after = await asyncio.to_thread(scrape, service)
            requests = "http_server_requests_total"
            ok_before = before.get(requests, **ECHO, status="200")
            assert after.get(requests, **ECHO, status="200") - ok_before == 3
            assert after.get(requests, **ECHO, status="400") == 1
            # Unknown paths share one label value: a scanner cannot blow up the series count.
            assert after.get(requests, method="GET", route="unmatched", status="404") == 2
            assert not [key for _, key in after.values if "/metrics" in str(key)]
            durations = "http_server_request_duration_seconds_count"
            assert after.get(durations, **ECHO) - before.get(durations, **ECHO) == 4

            slow = asyncio.create_task(_get(session, f"{service.url}/v1/echo?delay_ms=3000"))
            await _scrape_until(
                service,
                lambda s: s.get("http_server_requests_in_flight") == 1,
                "the slow request counted in flight",
            )
            async with session.get(f"{service.admin_url}/debug/tasks") as response:
                tasks = (await response.json())["tasks"]
            stuck = [t for t in tasks if t["task"].startswith("http GET /v1/echo request_id=")]
            assert len(stuck) == 1, tasks
            assert any("in echo" in frame for frame in stuck[0]["stack"]), stuck

            # SIGUSR1 logs the same, and nothing stops.
            service.signal(signal.SIGUSR1)
            dump = await asyncio.to_thread(service.wait_for_event, "task_dump")
            assert stuck[0]["task"] in [t["task"] for t in dump["tasks"]]
            assert (await asyncio.to_thread(scrape, service)).get(
                "lifecycle_phase", lifecycle_phase="serving"
            ) == 1
            assert await _get(session, f"{service.url}/readyz") == 200
            assert service.events("shutdown_requested") == []

            service.signal(signal.SIGTERM)
            # The admin port answers through the shutdown: here, while in-flight work drains.
            during = await _scrape_until(
                service,
                lambda s: s.get("lifecycle_phase", lifecycle_phase="drain_in_flight") == 1,
                "the drain_in_flight phase on /metrics",
            )
            assert during.get("shutdown_phase_duration_seconds", phase="drain_delay") >= 0.45
            assert during.get("shutdown_started_timestamp_seconds") > time.time() - 60
            assert during.get("shutdown_budget_seconds") == 10
            assert during.get("http_server_requests_in_flight") == 1
            assert await slow == 200
        assert service.wait_exit(timeout=15) == 0, service.output()

    [report] = service.events("shutdown_complete")
    assert report["drained"]["http"] == {
        "requests_in_flight_at_close": 1,
        "slow_clients_cut": 0,
        "streams_ended": 0,
    }
    assert report["unfinished"] == []
    access = [e for e in service.events("http_request") if e["route"] == "/v1/echo"]
    assert [e["status"] for e in access] == [200, 200, 200, 400, 200]
    assert all(e["request_id"] and e["method"] == "GET" for e in access)
    assert access[-1]["duration_ms"] >= 2950  # a 3 s delay; loop timers may fire ~1 ms early


class Stuck(Component):
    """A request that never finishes, in flight when the listeners close."""

    name = "http"

    def __init__(self) -> None:
        self.in_flight = InFlight()
        self.at_close = 0

    @override
    async def start(self) -> None:
        self.work = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        with self.in_flight.track("http GET /stuck request_id=r1"):
            await asyncio.sleep(3600)

    @override
    async def close_listeners(self) -> None:
        self.at_close = len(self.in_flight)

    @override
    async def drain(self) -> None:
        await self.in_flight.wait_idle()

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        return self.in_flight.tasks()

    @override
    def shutdown_report(self) -> dict[str, int]:
        return {"requests_in_flight_at_close": self.at_close}


async def test_deadline_exceeded_report_names_the_unfinished_work_with_its_stack() -> None:
    readiness = Readiness()
    lifecycle = Lifecycle([Stuck()], readiness, drain_delay=0.0, shutdown_timeout=0.5)
    running = asyncio.create_task(lifecycle.run())
    for _ in range(200):
        if readiness.ready:
            break
        await asyncio.sleep(0.01)
    with capture_logs() as logs:
        lifecycle.request_stop(signal.SIGTERM)
        assert await running == ExitCode.DEADLINE
    [report] = [entry for entry in logs if entry["event"] == "shutdown_complete"]
    assert report["drained"] == {"http": {"requests_in_flight_at_close": 1}}
    [unfinished] = [u for u in report["unfinished"] if u["task"].startswith("http GET /stuck")]
    assert unfinished["phase"] == "drain_in_flight"
    assert any("in Stuck._serve" in frame for frame in unfinished["stack"]), unfinished
    logged = [entry["task"] for entry in logs if entry["event"] == "task_unfinished"]
    assert logged == [u["task"] for u in report["unfinished"]]


def test_access_log_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCESS_LOG", raising=False)
    assert Settings().access_log is True
    monkeypatch.setenv("ACCESS_LOG", "false")
    assert Settings().access_log is False


@pytest.mark.parametrize(
    ("access_log", "level", "written"),
    [
        ("true", "debug", True),
        ("true", "info", True),
        ("true", "warning", False),  # an info line: nothing to build
        ("true", "error", False),
        ("false", "info", False),
    ],
)
def test_access_log_lines_are_built_only_where_they_are_written(
    monkeypatch: pytest.MonkeyPatch, access_log: str, level: str, written: bool
) -> None:
    monkeypatch.setenv("ACCESS_LOG", access_log)
    monkeypatch.setenv("LOG_LEVEL", level)
    assert Settings().writes_access_log is written
