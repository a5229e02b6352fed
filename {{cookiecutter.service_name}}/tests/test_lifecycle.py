"""Unit tests of the root scope: phase order, deadlines, start failures, forced exit."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, NoReturn, cast

import pytest
from structlog.testing import capture_logs
from typing_extensions import override

from {{ cookiecutter.package_name }}.platform import metrics
from {{ cookiecutter.package_name }}.platform.inflight import InFlight
from {{ cookiecutter.package_name }}.platform.lifecycle import (
    Component,
    ExitCode,
    Lifecycle,
    await_stack,
    close_reserve,
    exit_code,
)
from {{ cookiecutter.package_name }}.platform.phases import SHUTDOWN_PHASES, Phase
from {{ cookiecutter.package_name }}.platform.readiness import Readiness

PHASES = ("close_listeners", "end_streams", "drain", "stop_tasks", "close")


class Recorder(Component):
    """Records every call, in order, into a shared journal."""

    def __init__(self, name: str, journal: list[str], readiness: Readiness | None = None) -> None:
        self.name = name
        self.journal = journal
        self.readiness = readiness

    @override
    async def start(self) -> None:
        self.journal.append(f"{self.name}.start")

    def _record(self, phase: str) -> None:
        ready = self.readiness is None or self.readiness.ready
        self.journal.append(f"{self.name}.{phase}" + ("" if ready else " (not ready)"))

    @override
    async def close_listeners(self) -> None:
        self._record("close_listeners")

    @override
    async def end_streams(self) -> None:
        self._record("end_streams")

    @override
    async def drain(self) -> None:
        self._record("drain")

    @override
    async def stop_tasks(self) -> None:
        self._record("stop_tasks")

    @override
    async def close(self) -> None:
        self._record("close")


class ForcedExitError(Exception):
    pass


def forbid_exit(code: int) -> NoReturn:
    raise ForcedExitError(code)


async def run_until_ready(lifecycle: Lifecycle, readiness: Readiness) -> asyncio.Task[ExitCode]:
    running = asyncio.create_task(lifecycle.run())
    for _ in range(200):
        if readiness.ready:
            return running
        await asyncio.sleep(0.01)
    raise AssertionError("never became ready")


async def test_phases_run_in_order_and_close_in_reverse() -> None:
    journal: list[str] = []
    readiness = Readiness()
    parts = [Recorder("db", journal, readiness), Recorder("http", journal, readiness)]
    lifecycle = Lifecycle(
        parts, readiness, drain_delay=0.05, shutdown_timeout=5, exit_now=forbid_exit
    )
    running = await run_until_ready(lifecycle, readiness)
    lifecycle.request_stop(signal.SIGTERM)
    assert await running == ExitCode.OK
    assert journal == [
        "db.start",
        "http.start",
        *(f"{name}.{phase} (not ready)" for phase in PHASES[:-1] for name in ("db", "http")),
        "http.close (not ready)",
        "db.close (not ready)",
    ]
    assert [p["phase"] for p in lifecycle.phases] == [
        "readiness_off",
        "drain_delay",
        "close_listeners",
        "end_streams",
        "drain_in_flight",
        "stop_tasks",
        "close",
    ]
    assert [p["phase"] for p in lifecycle.phases] == list(SHUTDOWN_PHASES)
    assert {p["outcome"] for p in lifecycle.phases} == {"ok"}
    assert lifecycle.phases[1]["duration_s"] >= 0.04


async def test_readiness_listeners_see_not_ready_before_the_drain_delay() -> None:
    seen: list[tuple[bool, bool]] = []
    readiness = Readiness()

    async def listener(ready: bool, shutting_down: bool) -> None:
        seen.append((ready, shutting_down))

    readiness.subscribe(listener)
    lifecycle = Lifecycle([], readiness, drain_delay=0.2, shutdown_timeout=5, exit_now=forbid_exit)
    running = await run_until_ready(lifecycle, readiness)
    lifecycle.request_stop(signal.SIGTERM)
    await asyncio.sleep(0.05)  # inside the drain delay
    assert seen == [(True, False), (False, True)]
    assert not running.done()
    assert await running == ExitCode.OK


class Hung(Component):
    """In-flight work that never finishes on its own."""

    name = "hung"

    def __init__(self) -> None:
        self.in_flight = InFlight()
        self.work: asyncio.Task[None] | None = None
        self.closed = False

    @override
    async def start(self) -> None:
        self.work = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        with self.in_flight.track("http GET /slow request_id=r1"):
            await asyncio.sleep(3600)

    @override
    async def drain(self) -> None:
        await self.in_flight.wait_idle()

    @override
    async def close(self) -> None:
        self.closed = True

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        return self.in_flight.tasks()


async def test_deadline_cancels_names_and_still_closes() -> None:
    readiness = Readiness()
    hung = Hung()
    lifecycle = Lifecycle(
        [hung], readiness, drain_delay=0.1, shutdown_timeout=1.0, exit_now=forbid_exit
    )
    running = await run_until_ready(lifecycle, readiness)
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        began = loop.time()
        lifecycle.request_stop(signal.SIGTERM)
        code = await running
        took = loop.time() - began
    assert code == ExitCode.DEADLINE
    assert took < 1.0 + 0.2, "exits within SHUTDOWN_TIMEOUT"
    assert took >= 1.0 - close_reserve(1.0) - 0.05, "waits until the drain deadline"
    assert hung.work is not None
    assert hung.work.cancelled()
    assert hung.closed, "the close phase still runs after a deadline"
    unfinished = [entry for entry in logs if entry["event"] == "task_unfinished"]
    names = {entry["task"] for entry in unfinished}
    assert "http GET /slow request_id=r1" in names
    stuck = next(e for e in unfinished if e["task"] == "http GET /slow request_id=r1")
    assert any("_serve" in frame for frame in stuck["stack"])
    outcomes = {p["phase"]: p["outcome"] for p in lifecycle.phases}
    assert outcomes["drain_in_flight"] == "deadline_exceeded"
    assert outcomes["close"] == "ok"


class FailsToStart(Component):
    name = "broken"

    @override
    async def start(self) -> None:
        raise OSError("[Errno 98] address already in use")


async def test_failed_start_closes_what_started() -> None:
    journal: list[str] = []
    readiness = Readiness()
    first = Recorder("first", journal)
    lifecycle = Lifecycle(
        [first, FailsToStart(), Recorder("never", journal)],
        readiness,
        drain_delay=5,
        shutdown_timeout=10,
        exit_now=forbid_exit,
    )
    with capture_logs() as logs:
        assert await asyncio.wait_for(lifecycle.run(), 5) == ExitCode.START_FAILED
    assert "first.close" in journal
    assert not any(entry.startswith("never.") for entry in journal)
    [failure] = [entry for entry in logs if entry["event"] == "start_failed"]
    assert failure["component"] == "broken"
    assert "address already in use" in failure["error"]
    assert not readiness.ready


class SlowStart(Component):
    name = "slow"

    @override
    async def start(self) -> None:
        await asyncio.sleep(3600)


async def test_signal_during_start_shuts_down_without_drain_delay() -> None:
    readiness = Readiness()
    lifecycle = Lifecycle([SlowStart()], readiness, drain_delay=30, shutdown_timeout=60)
    running = asyncio.create_task(lifecycle.run())
    await asyncio.sleep(0.05)
    lifecycle.request_stop(signal.SIGINT)
    assert await asyncio.wait_for(running, 5) == ExitCode.OK


async def test_second_signal_exits_at_once() -> None:
    readiness = Readiness()
    lifecycle = Lifecycle([], readiness, drain_delay=30, shutdown_timeout=60, exit_now=forbid_exit)
    running = await run_until_ready(lifecycle, readiness)
    lifecycle.request_stop(signal.SIGTERM)
    with pytest.raises(ForcedExitError) as forced:
        lifecycle.request_stop(signal.SIGTERM)
    assert forced.value.args == (ExitCode.FORCED,)
    running.cancel()


class FailsToClose(Recorder):
    @override
    async def close(self) -> None:
        raise RuntimeError("boom")


async def test_error_in_a_phase_is_not_a_clean_exit() -> None:
    readiness = Readiness()
    lifecycle = Lifecycle(
        [FailsToClose("x", [])], readiness, drain_delay=0, shutdown_timeout=5, exit_now=forbid_exit
    )
    running = await run_until_ready(lifecycle, readiness)
    lifecycle.request_stop(signal.SIGTERM)
    assert await running == ExitCode.ERROR


async def test_await_stack_follows_the_await_chain() -> None:
    async def inner() -> None:
        await asyncio.sleep(3600)

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    stack = await_stack(task)
    task.cancel()
    assert [frame.rsplit(" in ", 1)[1] for frame in stack[:2]] == [
        "test_await_stack_follows_the_await_chain.<locals>.outer",
        "test_await_stack_follows_the_await_chain.<locals>.inner",
    ]
    assert "sleep" in stack[2]


def test_close_reserve_is_bounded() -> None:
    assert close_reserve(20) == 2.0
    assert close_reserve(1) == pytest.approx(0.2)


async def test_watchdog_exits_when_the_event_loop_is_blocked() -> None:
    exits: list[int] = []
    record_exit = cast(Callable[[int], NoReturn], exits.append)
    lifecycle = Lifecycle(
        [], Readiness(), drain_delay=0, shutdown_timeout=0.2, exit_now=record_exit
    )
    lifecycle.request_stop(signal.SIGTERM)
    time.sleep(0.6)  # noqa: ASYNC251 - a handler blocking the loop is exactly the case under test
    assert exits == [ExitCode.DEADLINE]


def test_every_phase_is_a_state_of_the_phase_metric() -> None:
    for phase in Phase:
        metrics.LIFECYCLE_PHASE.state(phase)  # raises for a state the metric does not know
    metrics.LIFECYCLE_PHASE.state(Phase.STARTING)


def test_exit_code_precedence() -> None:
    assert exit_code(set()) == ExitCode.OK
    assert exit_code({ExitCode.OK, ExitCode.ERROR}) == ExitCode.ERROR
    assert exit_code({ExitCode.ERROR, ExitCode.DEADLINE}) == ExitCode.DEADLINE
    assert exit_code({ExitCode.DEADLINE, ExitCode.FAILED}) == ExitCode.FAILED
    assert exit_code({ExitCode.DEADLINE, ExitCode.START_FAILED}) == ExitCode.START_FAILED


class Background(Component):
    """A component with one background task: it runs until `finish` is set, then raises `error`
    (or, without one, returns)."""

    name = "worker"

    def __init__(self, error: Exception | None = None, *, until_stopped: bool = True) -> None:
        self.error = error
        self.until_stopped = until_stopped
        self.finish = asyncio.Event()
        self.stopped = False

    @override
    async def start(self) -> None:
        self.spawn(self._work(), "loop", until_stopped=self.until_stopped)

    async def _work(self) -> None:
        await self.finish.wait()
        if self.error is not None:
            raise self.error

    @override
    async def stop_tasks(self) -> None:
        self.stopped = True


async def _ended_while_running(
    worker: Background,
) -> tuple[list[MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """Run `worker` until ready, let its task end: the service stops with FAILED. Returns the
    logs and their one `component_failed` entry."""
    readiness = Readiness()
    lifecycle = Lifecycle([worker], readiness, drain_delay=0, shutdown_timeout=5)
    running = await run_until_ready(lifecycle, readiness)
    with capture_logs() as logs:
        worker.finish.set()
        assert await asyncio.wait_for(running, 5) == ExitCode.FAILED
    [failure] = [entry for entry in logs if entry["event"] == "component_failed"]
    return logs, failure


async def test_a_failed_background_task_stops_the_service_and_is_named() -> None:
    worker = Background(RuntimeError("lost the connection for good"))
    logs, failure = await _ended_while_running(worker)
    assert failure["component"] == "worker"
    assert failure["task"] == "worker.loop"
    assert "lost the connection for good" in failure["error"]
    assert worker.stopped, "the service shut down through its phases"
    [report] = [entry for entry in logs if entry["event"] == "shutdown_complete"]
    assert report["exit_code"] == ExitCode.FAILED


async def test_a_background_task_that_ends_on_its_own_stops_the_service() -> None:
    worker = Background()  # returns once `finish` is set: a loop that gave up silently
    _, failure = await _ended_while_running(worker)
    assert (failure["component"], failure["task"]) == ("worker", "worker.loop")
    assert failure["error"] == "ended while the service was running"


async def test_a_one_shot_task_may_end_and_a_loop_may_end_with_the_shutdown() -> None:
    readiness = Readiness()
    one_shot, loop = Background(until_stopped=False), Background()
    loop.name = "loop"
    lifecycle = Lifecycle([one_shot, loop], readiness, drain_delay=0, shutdown_timeout=5)
    running = await run_until_ready(lifecycle, readiness)
    with capture_logs() as logs:
        one_shot.finish.set()
        await asyncio.sleep(0.05)
        assert not running.done(), "a one-shot task that finished its work stops nothing"
        lifecycle.request_stop(signal.SIGTERM)
        loop.finish.set()  # ends during the shutdown, as a loop does when told to stop
        assert await asyncio.wait_for(running, 5) == ExitCode.OK
    assert [entry for entry in logs if entry["event"] == "component_failed"] == []


async def test_a_background_task_failing_before_ready_is_a_failed_start() -> None:
    readiness = Readiness()
    worker = Background(ConnectionRefusedError("postgres unreachable"))
    worker.finish.set()
    lifecycle = Lifecycle([worker, SlowStart()], readiness, drain_delay=30, shutdown_timeout=5)
    with capture_logs() as logs:
        assert await asyncio.wait_for(lifecycle.run(), 5) == ExitCode.START_FAILED
    assert [e["component"] for e in logs if e["event"] == "component_failed"] == ["worker"]


async def test_a_failure_outside_a_lifecycle_is_still_reported() -> None:
    worker = Background(RuntimeError("boom"))
    with capture_logs() as logs:
        await worker.start()
        worker.finish.set()
        for _ in range(100):
            if any(entry["event"] == "background_task_failed" for entry in logs):
                break
            await asyncio.sleep(0.01)
    [failure] = [entry for entry in logs if entry["event"] == "background_task_failed"]
    assert (failure["component"], failure["task"], failure["error"]) == (
        "worker",
        "worker.loop",
        "boom",
    )


PROJECT = Path(__file__).resolve().parent.parent


def test_mypy_config_requires_explicit_overrides() -> None:
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "explicit-override" in config["enable_error_code"]


def test_a_misspelled_or_unmarked_hook_is_a_type_error(tmp_path: Path) -> None:
    """The project's mypy configuration turns a hook that overrides nothing, or an override that
    does not say so, into an error: neither can silently do nothing."""
    snippet = tmp_path / "component_snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """\
            from typing_extensions import override

            from {{ cookiecutter.package_name }}.platform.lifecycle import Component


            class Misspelled(Component):
                @override
                async def close_listener(self) -> None:  # the hook is close_listeners
                    pass


            class Unmarked(Component):
                async def drain(self) -> None:
                    pass


            class Correct(Component):
                @override
                async def stop_tasks(self) -> None:
                    pass
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", str(snippet)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, result.stdout + result.stderr
    assert any('"close_listener" is marked as an override' in line for line in errors), errors
    assert any('"drain" is not using @override' in line for line in errors), errors
