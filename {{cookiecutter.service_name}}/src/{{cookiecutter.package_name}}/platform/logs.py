"""Structured logging: JSON lines on stdout, or a readable console format on a TTY.

Every log line carries the context bound with `structlog.contextvars` (the request id of the
request or RPC being served), because each request and RPC runs in its own asyncio task.

Lines reach stdout through one `LogOutput`: collected in memory and written together every
`FLUSH_INTERVAL` (a write per line cost more than rendering it), and at once by `flush_logs`,
which every exit path calls (a clean shutdown, the deadline, a second signal). Only a SIGKILL (or
a crash of the interpreter itself) can lose lines: at most the last `FLUSH_INTERVAL` of them.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import orjson
import structlog

LogFormat = Literal["auto", "json", "console"]

log = structlog.get_logger()
LOGGER_NAME = "{{ cookiecutter.package_name }}"


def _logger_name(
    logger: object, method_name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """The service's own events are named like a stdlib logger's (`logger` field)."""
    event_dict["logger"] = LOGGER_NAME
    return event_dict


class UtcTimestamp:
    """`timestamp`: ISO 8601 in UTC with microseconds, as structlog's `TimeStamper(fmt="iso",
    utc=True)` writes it, at a fifth of its cost (it ran on every access log line): the date and
    time of day are formatted once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, logger: object, method_name: str, event_dict: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


FLUSH_INTERVAL = 0.05
"""Seconds a line may wait in memory before it is written."""
FLUSH_LINES = 512
"""A burst of this many lines is written at once, without waiting for the timer."""


class LogOutput:
    """The one writer of every log line (structlog's and the stdlib loggers').

    `write` only appends (structlog and logging call `flush` after each line: that is a no-op);
    the event loop's timer, a burst of FLUSH_LINES or `drain` write the lines out in one call.
    Outside a running event loop (start-up, a thread of a library) a line is written at once,
    after those waiting, so the order is kept."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def write(self, text: str) -> int:
        with self._lock:
            self._lines.append(text)
            pending = len(self._lines)
        if pending >= FLUSH_LINES:
            self.drain()
            return len(text)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
        else:
            # (A timer of a loop that has ended never fires: the new loop sets its own.)
            if self._timer is None or self._timer_loop is not loop:
                self._timer = loop.call_later(FLUSH_INTERVAL, self._on_timer)
                self._timer_loop = loop
        return len(text)

    def flush(self) -> None:
        """Called after every line by its writers; the timer flushes instead."""

    def _on_timer(self) -> None:
        self._timer = None
        self.drain()

    def drain(self) -> None:
        """Write every waiting line now."""
        with self._lock:
            lines, self._lines = self._lines, []
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()


_output: LogOutput | None = None
"""Set by configure_logging."""
_json_output: LogOutput | None = None
"""The same when lines are JSON: the access log renders its lines itself."""
_extra: tuple[structlog.types.Processor, ...] = ()
_timestamp = UtcTimestamp()


def _json_line(event: Any, **kwargs: Any) -> str:
    """orjson renders a line in a tenth of the json module's time; structlog passes `default`
    (its fallback for types JSON lacks)."""
    return orjson.dumps(event, **kwargs).decode()


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    extra: Sequence[structlog.types.Processor] = (),
) -> None:
    """One renderer for the service's own events and the stdlib loggers (aiohttp, grpc,
    asyncio); `extra` processors add fields to every line.

    The service's events are rendered and written by structlog itself: the stdlib bridge
    (a `LogRecord`, a caller lookup and a second record per line) tripled the cost of an access
    log line (docs/benchmarks.md). Only foreign loggers go through `logging`."""
    global _output, _json_output, _extra
    if _output is not None:
        _output.drain()
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    _output = output = LogOutput(sys.stdout)
    _json_output = None if console else output
    _extra = tuple(extra)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        *extra,
        structlog.processors.add_log_level,
        _timestamp,
    ]
    renderer: structlog.types.Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    else:
        # Tracebacks without locals: frames hold secrets (a DSN with its password, settings).
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)

    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    structlog.configure(
        processors=[_logger_name, *shared, renderer],
        logger_factory=structlog.WriteLoggerFactory(output),  # type: ignore[arg-type]
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


class AccessLog:
    """Writes the access log line of a request or RPC: `event` with `fields`, `status` and
    `duration_ms`, the bound context (request id) and the `extra` processors' fields, exactly as
    `log.info` would, without its processor chain: the line is rendered from the parts once per
    request (a third of the cost). In the console format it is plain `log.info`."""

    __slots__ = ("event",)

    def __init__(self, event: str) -> None:
        self.event = event

    def write(self, fields: dict[str, str], status: int | str, duration_ms: float) -> None:
        output = _json_output
        if output is None:
            log.info(self.event, **fields, status=status, duration_ms=duration_ms)
            return
        line: dict[str, Any] = {"event": self.event, **fields}
        line["status"] = status
        line["duration_ms"] = duration_ms
        structlog.contextvars.merge_contextvars(None, "info", line)
        for processor in _extra:
            line = processor(None, "info", line)  # type: ignore[assignment]
        line["level"] = "info"
        line["logger"] = LOGGER_NAME
        _timestamp(None, "info", line)
        output.write(orjson.dumps(line, default=repr).decode() + "\n")


def flush_logs() -> None:
    """Make sure every line reached stdout before the process exits."""
    if _output is not None:
        _output.drain()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


atexit.register(flush_logs)
