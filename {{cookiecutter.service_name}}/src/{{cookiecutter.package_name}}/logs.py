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
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
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
    utc=True)` writes it, at a fifth of its cost (it runs on every access log line): the date and
    time of day are formatted once a second."""

    __slots__ = ("_next", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = 0.0
        self._next = 0.0  # the current second's prefix holds until then
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        if now >= self._next:
            second = int(now)
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = float(second)
            self._next = float(second + 1)
        return f"{self._prefix}{int((now - self._second) * 1_000_000):06d}Z"

    def __call__(
        self, logger: object, method_name: str, event_dict: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event_dict["timestamp"] = self.now()
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
    `log.info` would, without its processor chain. `target(fields)` prepares the line's constant
    part once per target (method and route); each request then renders only what is its own.
    In the console format it is plain `log.info`."""

    __slots__ = ("event",)

    def __init__(self, event: str) -> None:
        self.event = event

    def target(self, fields: Mapping[str, str]) -> AccessTarget:
        """The writer of one target's lines (made once per target: see `AccessTarget`)."""
        return AccessTarget(self.event, fields)

    def write(self, fields: Mapping[str, str], status: int | str, duration_ms: float) -> None:
        self.target(fields).write(status, duration_ms)


class AccessTarget:
    """One target's access log lines. With JSON lines and no `extra` processors (the defaults),
    a line is joined from strings: the event and fields rendered once, the status once per
    status code, then the duration, the bound context, the level, logger and time of this line.
    Through a dictionary and `orjson.dumps` a line cost about twice as much, and it runs for
    every request (docs/benchmarks.md). With `extra` processors (tracing) the line is built as a
    dictionary, as before."""

    __slots__ = ("_event", "_fields", "_head", "_heads", "_own")

    def __init__(self, event: str, fields: Mapping[str, str]) -> None:
        self._event = event
        self._fields = dict(fields)
        # `{"event":"http_request","method":"GET","route":"/v1/echo",`
        self._head = orjson.dumps({"event": event, **fields}).decode()[:-1] + ","
        self._heads: dict[int | str, str] = {}
        """`self._head` with the status and the duration's key, by status."""
        self._own = frozenset(
            ("event", *fields, "status", "duration_ms", "level", "logger", "timestamp")
        )
        """Keys the bound context cannot set on this line (`merge_contextvars` only adds keys
        that are missing; level, logger and time are set after it)."""

    def write(self, status: int | str, duration_ms: float) -> None:
        output = _json_output
        if output is None or _extra:
            self._write_through_dict(output, status, duration_ms)
            return
        head = self._heads.get(status)
        if head is None:
            head = self._heads[status] = f"{self._head}{_STATUS}{_json(status)},{_DURATION}"
        context = ""
        own = self._own
        for var, value in contextvars.copy_context().items():
            key = _context_keys.get(var, _NOT_SEEN)
            if key is _NOT_SEEN:
                key = _context_key(var)
            if key is not None and value is not Ellipsis and key[0] not in own:
                context += key[1] + _json(value) + ","
        # A duration is a finite float, whose repr is its JSON.
        output.write(
            head + repr(duration_ms) + "," + context + _ACCESS_TAIL + _timestamp.now() + '"}\n'
        )

    def _write_through_dict(
        self, output: LogOutput | None, status: int | str, duration_ms: float
    ) -> None:
        if output is None:
            log.info(self._event, **self._fields, status=status, duration_ms=duration_ms)
            return
        line: dict[str, Any] = {"event": self._event, **self._fields}
        line["status"] = status
        line["duration_ms"] = duration_ms
        structlog.contextvars.merge_contextvars(None, "info", line)
        for processor in _extra:
            line = processor(None, "info", line)  # type: ignore[assignment]
        line["level"] = "info"
        line["logger"] = LOGGER_NAME
        _timestamp(None, "info", line)
        output.write(orjson.dumps(line, default=repr).decode() + "\n")


def _json(value: object) -> str:
    return orjson.dumps(value, default=repr).decode()


_STATUS = '"status":'
_DURATION = '"duration_ms":'
_ACCESS_TAIL = f'"level":"info","logger":{_json(LOGGER_NAME)},"timestamp":"'
_NOT_SEEN = ("", "")
_context_keys: dict[contextvars.ContextVar[Any], tuple[str, str] | None] = {}
"""Every context variable seen in a request's context: for those of structlog's bound context
(`bind_contextvars`), its key and the key rendered (`"request_id":`), else None."""


def _context_key(var: contextvars.ContextVar[Any]) -> tuple[str, str] | None:
    """What `merge_contextvars` makes of `var`: the same prefix test, once per variable."""
    key = None
    prefix = structlog.contextvars.STRUCTLOG_KEY_PREFIX
    if var.name.startswith(prefix):
        name = var.name[len(prefix) :]
        key = (name, _json(name) + ":")
    _context_keys[var] = key
    return key


def flush_logs() -> None:
    """Make sure every line reached stdout before the process exits."""
    if _output is not None:
        _output.drain()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


atexit.register(flush_logs)
