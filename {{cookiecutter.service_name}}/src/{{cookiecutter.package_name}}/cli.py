"""Command line entry point: `python -m <package>` and the console script."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib.metadata import PackageNotFoundError, metadata
from typing import Any, NoReturn, TypeAlias

from .app import LOG_PROCESSORS, SETTINGS, build_components
from .platform.lifecycle import ExitCode, Lifecycle
from .platform.logs import configure_logging, flush_logs, log
from .platform.metrics import describe_build
from .platform.readiness import Readiness
from .platform.settings import Config, InvalidSettingsError, Settings, load


def load_settings() -> Config | None:
    """The platform's settings and every group in `app.SETTINGS`, or None (each problem printed)."""
    try:
        return load((Settings, *SETTINGS))
    except InvalidSettingsError as error:
        print("invalid configuration:", file=sys.stderr)
        for line in error.lines:
            print(f"  {line}", file=sys.stderr)
        return None


async def serve(config: Config) -> ExitCode:
    settings = config[Settings]
    describe_build("{{ cookiecutter.service_name }}")
    loop = type(asyncio.get_running_loop())
    log.info("event_loop", implementation=loop.__module__.partition(".")[0])
    readiness = Readiness()
    lifecycle = Lifecycle(
        build_components(config, readiness),
        readiness,
        drain_delay=settings.drain_delay,
        shutdown_timeout=settings.shutdown_timeout,
    )
    return await lifecycle.run()


Command: TypeAlias = Callable[[Config], Coroutine[Any, Any, ExitCode]]
COMMANDS: dict[str, Command] = {"serve": serve}
{%- if cookiecutter.use_postgres == "yes" %}


async def apply_migrations(config: Config) -> ExitCode:
    """`migrate`: the platform's migrations, then the features' (app.MIGRATIONS)."""
    from .app import MIGRATIONS
    from .platform.db import PostgresSettings
    from .platform.migrations import migrate

    await migrate(config[PostgresSettings], MIGRATIONS)
    return ExitCode.OK


COMMANDS["migrate"] = apply_migrations
{%- endif %}


def event_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to run on (None: asyncio's own).
{%- if cookiecutter.use_uvloop == "yes" %} uvloop runs the same code with less CPU per
    request (docs/benchmarks.md); EVENT_LOOP=asyncio switches back without a rebuild."""
    if settings.event_loop == "uvloop" and sys.platform != "win32":  # no uvloop on Windows
        import uvloop

        return uvloop.new_event_loop
{%- else %}"""
{%- endif %}
    return None


def _summary() -> str:
    """The project's description, from its metadata (pyproject.toml), not pasted into code."""
    try:
        return str(metadata("{{ cookiecutter.service_name }}")["Summary"])
    except PackageNotFoundError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="{{ cookiecutter.package_name }}",
        description=f"{_summary()} Configured by environment variables (see README).",
    )
    parser.add_argument(
        "command", nargs="?", default="serve", choices=COMMANDS, help="(default: serve)"
    )
    command = COMMANDS[parser.parse_args(argv).command]
    config = load_settings()
    if config is None:
        return ExitCode.CONFIG
    settings = config[Settings]
    configure_logging(settings.log_level, settings.log_format, LOG_PROCESSORS)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
            code = runner.run(command(config))
    except Exception:
        log.exception("command_failed")
        code = ExitCode.ERROR
    log.info("exit", exit_code=int(code))
    flush_logs()
    return int(code)


def run() -> NoReturn:
    """The process entry point: `main`, then exit without the interpreter's teardown.

    Unloading aiohttp, grpc's C core and friends takes longer than the whole shutdown; the work
    that matters (phases, pools, log flush) is done by now, so skip it.
    """
    code = main()
    flush_logs()
    os._exit(code)
