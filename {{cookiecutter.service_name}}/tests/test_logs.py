"""The JSON log lines: one object per line, ISO timestamps, odd values rendered, not fatal."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import structlog

from {{ cookiecutter.package_name }}.platform import logs
from {{ cookiecutter.package_name }}.platform.logs import (
    FLUSH_INTERVAL,
    FLUSH_LINES,
    LOGGER_NAME,
    RENDER_LINES,
    AccessLog,
    LogOutput,
    UtcTimestamp,
    configure_logging,
    flush_logs,
)
from {{ cookiecutter.package_name }}.platform.metrics import http_metrics
from {{ cookiecutter.package_name }}.platform.request_id import request_id_from

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@dataclass
class Captured:
    log: Any
    """A logger of the test's own: the module's `log` keeps the first configuration it used."""
    stdout: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.getvalue().splitlines()]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """Logging configured for JSON on a stdout of the test's own; the previous setup restored
    after."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    for state in ("_output", "_json_output", "_extra"):  # restored after the test
        monkeypatch.setattr(logs, state, getattr(logs, state))
    configure_logging("info", "json")
    try:
        yield Captured(structlog.get_logger(), stdout)
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_timestamps_are_iso_utc_with_microseconds_and_move_with_the_clock() -> None:
    stamp = UtcTimestamp()
    stamps = []
    for _ in range(3):
        before = time.time()
        value = stamp(None, "info", {})["timestamp"]
        after = time.time()
        assert ISO_UTC.fullmatch(value), value
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        assert before - 1e-6 <= parsed <= after + 1e-6
        stamps.append(value)
        time.sleep(0.6)  # across at least one whole second: the cached prefix moves on
    assert stamps == sorted(stamps)
    assert len({value[:19] for value in stamps}) >= 2


def test_a_line_is_one_json_object_with_level_time_logger_and_bound_context(
    captured: Captured,
) -> None:
    event_id = uuid.uuid4()
    with structlog.contextvars.bound_contextvars(request_id="rid-1"):
        captured.log.info(
            "something_happened", event_id=event_id, amount=Decimal("1.50"), tags={"a"}
        )
    (line,) = captured.lines()
    assert line["event"] == "something_happened"
    assert (line["level"], line["logger"]) == ("info", LOGGER_NAME)
    assert line["request_id"] == "rid-1"
    assert line["event_id"] == str(event_id)  # orjson writes UUIDs natively
    assert line["amount"] == repr(Decimal("1.50"))  # types JSON lacks: their repr, no crash
    assert line["tags"] == repr({"a"})
    assert ISO_UTC.fullmatch(line["timestamp"])


def test_an_exception_is_rendered_as_structured_frames_without_locals(captured: Captured) -> None:
    secret = "postgresql://user:hunter2@db/x"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        captured.log.exception("it_failed", dsn_hint=len(secret))
    (line,) = captured.lines()
    assert line["event"] == "it_failed"
    (exception,) = line["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert exception["exc_value"] == "boom"
    assert "hunter2" not in json.dumps(line)


def test_foreign_loggers_get_the_same_json_lines(captured: Captured) -> None:
    logging.getLogger("aiohttp.server").warning("from %s", "aiohttp")
    (line,) = captured.lines()
    assert (line["event"], line["level"], line["logger"]) == (
        "from aiohttp",
        "warning",
        "aiohttp.server",
    )
    assert ISO_UTC.fullmatch(line["timestamp"])


@pytest.mark.parametrize("enabled", [True, False])
def test_access_log_line_is_optional(enabled: bool, captured: Captured) -> None:
    metrics = http_metrics(access_log=enabled)
    with structlog.contextvars.bound_contextvars(request_id="rid-7"):
        metrics.observe(("GET", "/v1/echo"), 200, 0.0015)
    lines = captured.lines()
    if not enabled:
        assert lines == []
        return
    (line,) = lines
    assert ISO_UTC.fullmatch(line.pop("timestamp"))
    assert line == {
        "event": "http_request",
        "method": "GET",
        "route": "/v1/echo",
        "status": 200,
        "duration_ms": 1.5,
        "request_id": "rid-7",
        "level": "info",
        "logger": LOGGER_NAME,
    }


def test_the_access_log_line_is_the_line_log_info_writes(captured: Captured) -> None:
    """The access log renders its lines itself (for speed): the same fields, values and types."""
    fields = {"method": "POST", "route": "/v1/items/{id}"}
    with structlog.contextvars.bound_contextvars(request_id="rid-8", tenant="t1"):
        AccessLog("http_request").write(fields, 201, 0.25)
        captured.log.info("http_request", **fields, status=201, duration_ms=0.25)
    fast, reference = captured.lines()
    assert ISO_UTC.fullmatch(fast.pop("timestamp"))
    reference.pop("timestamp")
    assert fast == reference


@pytest.mark.parametrize(
    ("context", "server_bound"),
    [
        ({"request_id": request_id_from(None)}, True),  # the usual line: the short way
        ({"request_id": request_id_from("caller.id:7/a+b=c-d_e")}, True),  # the same
        ({"request_id": "0af7651916cd43dd8448eb211c80319c"}, False),  # bound by other code
        ({"request_id": 'a "quoted"\nid'}, False),  # needs escaping
        ({}, False),
    ],
)
def test_a_line_with_only_its_request_id_is_the_line_log_info_writes(
    context: dict[str, str], server_bound: bool, captured: Captured
) -> None:
    """The usual line (only the request id the server bound) takes a shorter way: still the
    same line as `log.info`'s, and so is every other line."""
    fields = {"method": "GET", "route": "/v1/echo"}
    with structlog.contextvars.bound_contextvars(**context):
        request_id = context["request_id"] if server_bound else ""
        AccessLog("http_request").target(fields).write(200, 1_234, request_id)
        captured.log.info("http_request", **fields, status=200, duration_ms=1.234)
    fast, reference = captured.lines()
    assert ISO_UTC.fullmatch(fast.pop("timestamp"))
    reference.pop("timestamp")
    assert fast == reference


async def test_lines_wait_for_the_timer_and_flush_logs_writes_them_at_once() -> None:
    """Inside the event loop lines are written together, FLUSH_INTERVAL later; `flush_logs` (on
    every exit path) does not wait. None is lost, and the order is kept."""
    stream = io.StringIO()
    output = LogOutput(stream)
    output.write("one\n")
    output.write("two\n")
    assert stream.getvalue() == ""
    await asyncio.sleep(FLUSH_INTERVAL * 3)
    assert stream.getvalue() == "one\ntwo\n"
    output.write("three\n")
    output.drain()
    assert stream.getvalue() == "one\ntwo\nthree\n"


async def test_a_burst_is_rendered_as_it_comes_and_written_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Access lines are rendered RENDER_LINES at a time as they arrive (no drain renders a
    whole burst: that held the event loop for 0.6 ms) and written FLUSH_LINES at a time, in
    order with the plain lines between them; `drain` writes what is left at once."""
    rendered: list[int] = []
    render = logs._rendered

    def counted(lines: list[str | logs.AccessRecord]) -> str:
        rendered.append(len(lines))
        return render(lines)

    monkeypatch.setattr(logs, "_rendered", counted)
    stream = io.StringIO()
    output = LogOutput(stream)
    head = '{"event":"http_request","status":200,"duration_ms":'
    expected = []
    for number in range(FLUSH_LINES + 10):
        if number % 100 == 7:
            output.write(f"plain {number}\n")
            expected.append(f"plain {number}")
        else:
            output.add((head, 1_500, f"id{number}", time.time()))
            expected.append(f"id{number}")
        if number == FLUSH_LINES - 2:
            assert stream.getvalue() == ""  # rendered, not yet written
    assert max(rendered) <= RENDER_LINES
    assert len(stream.getvalue().splitlines()) == FLUSH_LINES  # one burst, written at once
    output.drain()
    lines = stream.getvalue().splitlines()
    ids = [line if line.startswith("plain") else json.loads(line)["request_id"] for line in lines]
    assert ids == expected


async def test_a_line_from_another_thread_is_written_after_those_waiting() -> None:
    stream = io.StringIO()
    output = LogOutput(stream)
    output.write("loop\n")
    thread = threading.Thread(target=output.write, args=("thread\n",))
    thread.start()
    thread.join(timeout=5)
    assert stream.getvalue() == "loop\nthread\n"


def test_flush_logs_drains_the_configured_output(captured: Captured) -> None:
    async def log_inside_the_loop() -> None:
        captured.log.info("inside")
        assert captured.stdout.getvalue() == ""  # waiting for the timer
        flush_logs()
        assert [line["event"] for line in captured.lines()] == ["inside"]

    asyncio.run(log_inside_the_loop())
