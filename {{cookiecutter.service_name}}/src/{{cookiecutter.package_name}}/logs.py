"""Structured logging: JSON lines on stdout, or a readable console format on a TTY.

Every log line carries the context bound with `structlog.contextvars` (the request id of the
request or RPC being served), because each request and RPC runs in its own asyncio task.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

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
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        *extra,
        structlog.processors.add_log_level,
        UtcTimestamp(),
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

    handler = logging.StreamHandler(sys.stdout)
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
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def flush_logs() -> None:
    """Make sure every line reached stdout before the process exits."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
