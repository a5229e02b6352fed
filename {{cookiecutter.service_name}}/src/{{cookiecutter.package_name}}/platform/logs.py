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
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TextIO

import orjson
import structlog

from .request_id import REQUEST_ID

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
    time of day are formatted once a second, into `prefix`, which holds from `second` until
    `until`."""

    __slots__ = ("prefix", "second", "until")

    def __init__(self) -> None:
        self.second = 0.0
        self.until = 0.0
        self.prefix = ""

    def now(self) -> str:
        return self.at(time.time())

    def at(self, now: float) -> str:
        """The timestamp of the Unix time `now`."""
        if not self.second <= now < self.until:
            self.advance(now)
        # `%d` truncates the float itself: a third cheaper than an f-string with an int() call.
        return "%s%06dZ" % (self.prefix, (now - self.second) * 1_000_000)  # noqa: UP031

    def advance(self, now: float) -> None:
        """Make `prefix` that of `now`'s second (a new second, or the clock was set back)."""
        second = int(now)
        self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        self.second = float(second)
        self.until = float(second + 1)

    def __call__(
        self, logger: object, method_name: str, event_dict: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event_dict["timestamp"] = self.now()
        return event_dict


FLUSH_INTERVAL = 0.05
"""Seconds a line may wait in memory before it is written."""
FLUSH_LINES = 512
"""A burst of this many lines is written at once, without waiting for the timer."""
RENDER_LINES = 64
"""Lines waiting are rendered this many at a time as they arrive, and written FLUSH_LINES at a
time: rendering 512 at once held the event loop for 0.6 ms (docs/benchmarks.md)."""


AccessRecord = tuple[str, int, str, float]
"""A usual access log line before it is rendered: its head (event, target fields, status), the
duration in microseconds, the request id and the Unix time (see `AccessTarget.write`)."""


class LogOutput:
    """The one writer of every log line (structlog's and the stdlib loggers').

    `write` only appends (structlog and logging call `flush` after each line: that is a no-op);
    the event loop's timer, a burst of FLUSH_LINES or `drain` write the lines out in one call.
    Outside a running event loop (start-up, a thread of a library) a line is written at once,
    after those waiting, so the order is kept. `add` also takes an access line still to be
    rendered: lines are rendered RENDER_LINES at a time, in one loop, which costs half of
    rendering each line between two requests, when its code and data are no longer in the CPU's
    caches (docs/benchmarks.md)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: deque[str | AccessRecord] = deque()
        """Lines not rendered yet, in order."""
        self._text: list[str] = []
        """Rendered lines not written yet, in order (before those in `_lines`)."""
        self._text_lines = 0
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def write(self, text: str) -> int:
        self.add(text)
        return len(text)

    def add(self, line: str | AccessRecord) -> None:
        """A line, or an access line still to be rendered (`AccessRecord`)."""
        lines = self._lines
        lines.append(line)  # atomic: a deque needs no lock to take lines from any thread
        if len(lines) >= RENDER_LINES and self._render() >= FLUSH_LINES:
            self.drain()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
        else:
            # (A timer of a loop that has ended never fires: the new loop sets its own.)
            if self._timer is None or self._timer_loop is not loop:
                self._timer = loop.call_later(FLUSH_INTERVAL, self._on_timer)
                self._timer_loop = loop

    def flush(self) -> None:
        """Called after every line by its writers; the timer flushes instead."""

    def _on_timer(self) -> None:
        self._timer = None
        self.drain()

    def _render(self) -> int:
        """Render the lines waiting into `_text`; returns how many lines it holds."""
        with self._lock:
            self._take_and_render()
            return self._text_lines

    def _take_and_render(self) -> None:  # (with the lock held)
        lines, take = self._lines, self._lines.popleft
        if lines:
            taken = [take() for _ in range(len(lines))]
            self._text.append(_rendered(taken))
            self._text_lines += len(taken)

    def drain(self) -> None:
        """Write every waiting line now (in order: one drain at a time takes and writes)."""
        with self._lock:
            self._take_and_render()
            if self._text:
                text = "".join(self._text)
                self._text.clear()
                self._text_lines = 0
                self.stream.write(text)
                self.stream.flush()


def _rendered(lines: list[str | AccessRecord]) -> str:
    """The lines as one text, access records rendered in one loop: one `%` per line, the
    timestamp's date and time of day made once a second, no call per line (a call per line
    cost as much as the rest of its rendering)."""
    stamp, line_format = _timestamp, _ACCESS_LINE
    parts: list[str] = []
    append = parts.append
    for line in lines:
        if isinstance(line, str):
            append(line)
            continue
        head, duration_us, request_id, now = line
        if not stamp.second <= now < stamp.until:
            stamp.advance(now)
        # The duration in milliseconds with three decimals: the same JSON number as the float
        # it was, without formatting a float.
        append(
            line_format
            % (
                head,
                duration_us // 1000,
                duration_us % 1000,
                request_id,
                stamp.prefix,
                (now - stamp.second) * 1_000_000,
            )
        )
    return "".join(parts)


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
        self.target(fields).write(status, round(duration_ms * 1000))


class AccessTarget:
    """One target's access log lines. With JSON lines and no `extra` processors (the defaults),
    a line is one f-string: the event and fields rendered once, the status once per status
    code, then the duration, the bound context, and the level, logger and time. A dictionary
    through `orjson.dumps` (and structlog's `merge_contextvars`) cost twice as much, for every
    request (docs/benchmarks.md). With `extra` processors (tracing) the line is built as a
    dictionary, as before."""

    __slots__ = ("_event", "_fields", "_head", "_heads", "_id_only", "_own")

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
        self._id_only = _REQUEST_ID_NAME not in self._own
        """Whether a context that holds only a request id can take the short way."""

    def write(self, status: int | str, duration_us: int, request_id: str = "") -> None:
        """The line of one request: `duration_us` is its duration in whole microseconds.
        `request_id`: the id the server bound (`REQUEST_ID`), from `request_id_from`, so
        safe to write as it is; when it is all the context holds, the line takes the short way
        (the bound context is not walked, the id not checked character by character)."""
        output = _json_output
        if output is None or _extra:
            self._write_through_dict(output, status, duration_us / 1000)
            return
        head = self._heads.get(status)
        if head is None:
            head = self._heads[status] = f'{self._head}"status":{_json(status)},"duration_ms":'
        context = contextvars.copy_context()
        if (
            request_id
            and len(context) == 1
            and self._id_only
            and context.get(REQUEST_ID) is request_id
        ):
            # The usual line, rendered when the lines are written (`LogOutput.add`).
            output.add((head, duration_us, request_id, time.time()))
            return
        bound = _bound_context(context, self._own)
        output.write(
            f"{head}{duration_us // 1000}.{duration_us % 1000:03d},{bound}{_ACCESS_TAIL}"
            f'{_timestamp.now()}"}}\n'
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
    """`value` as JSON, as the line's renderer writes it (an odd type as its repr)."""
    return orjson.dumps(value, default=repr).decode()


def _bound_context(context: contextvars.Context, own: frozenset[str]) -> str:
    """What `merge_contextvars` adds to a line, rendered: `"key":value,` for every variable
    of structlog's bound context set in `context` whose key the line does not have."""
    bound = ""
    for var, value in context.items():
        key = _context_keys.get(var, _NOT_SEEN)
        if key is _NOT_SEEN:
            key = _context_key(var)
        if key is not None and value is not Ellipsis and key[0] not in own:
            bound += f"{key[1]}{_json(value)},"
    return bound


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


_REQUEST_ID_NAME = REQUEST_ID.name.removeprefix(structlog.contextvars.STRUCTLOG_KEY_PREFIX)
_REQUEST_ID_KEY = f"{_json(_REQUEST_ID_NAME)}:"
_ACCESS_LINE = (
    "%s%d.%03d,"
    + _REQUEST_ID_KEY.replace("%", "%%")
    + '"%s",'
    + _ACCESS_TAIL.replace("%", "%%")
    + '%s%06dZ"}\n'
)
"""An `AccessRecord`'s line: head, milliseconds, their thousandths, request id, the timestamp's
second and its microseconds."""


def flush_logs() -> None:
    """Make sure every line reached stdout before the process exits."""
    if _output is not None:
        _output.drain()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


atexit.register(flush_logs)
