"""The JSON log lines: one object per line, ISO timestamps, odd values rendered, not fatal."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import structlog

from {{ cookiecutter.package_name }}.logs import (
    LOGGER_NAME,
    UtcTimestamp,
    configure_logging,
)

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
