"""Structured logging: JSON lines on stdout, or a readable console format on a TTY.

Every log line carries the context bound with `structlog.contextvars` (the request id of the
request or RPC being served), because each request and RPC runs in its own asyncio task.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

log = structlog.get_logger("{{ cookiecutter.package_name }}")


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    extra: Sequence[structlog.types.Processor] = (),
) -> None:
    """Route structlog and the stdlib loggers (aiohttp, grpc, asyncio) through one renderer;
    `extra` processors add fields to every line."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        *extra,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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
        renderer = structlog.processors.JSONRenderer()

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def flush_logs() -> None:
    """Make sure every line reached stdout before the process exits."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
