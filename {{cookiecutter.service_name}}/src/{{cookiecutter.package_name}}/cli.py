"""Command line entry point: `{{ cookiecutter.package_name }}` or `python -m {{ cookiecutter.package_name }}`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from . import DESCRIPTION
from .app import build_components
from .lifecycle import ExitCode, Lifecycle
from .logs import configure_logging, flush_logs, log
{%- if cookiecutter.use_postgres == "yes" %}
from .migrations import migrate
{%- endif %}
from .readiness import Readiness
from .settings import Settings, describe_errors


def load_settings() -> Settings | None:
    try:
        return Settings()
    except ValidationError as error:
        print("invalid configuration:", file=sys.stderr)
        for line in describe_errors(error):
            print(f"  {line}", file=sys.stderr)
        return None


async def serve(settings: Settings) -> ExitCode:
    readiness = Readiness()
    lifecycle = Lifecycle(
        build_components(settings, readiness),
        readiness,
        drain_delay=settings.drain_delay,
        shutdown_timeout=settings.shutdown_timeout,
    )
    return await lifecycle.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="{{ cookiecutter.package_name }}",
        description=f"{DESCRIPTION} Configured by environment variables (see README).",
    )
{%- if cookiecutter.use_postgres == "yes" %}
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (the default)")
    commands.add_parser("migrate", help="apply pending database migrations, then exit")
{%- endif %}
    arguments = parser.parse_args(argv)
    settings = load_settings()
    if settings is None:
        return ExitCode.CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
{%- if cookiecutter.use_postgres == "yes" %}
        if arguments.command == "migrate":
            asyncio.run(migrate(settings))
            code = ExitCode.OK
        else:
            code = asyncio.run(serve(settings))
{%- else %}
        code = asyncio.run(serve(settings))
{%- endif %}
    except Exception:
        log.exception("command_failed")
        code = ExitCode.ERROR
    log.info("exit", exit_code=int(code))
    flush_logs()
    return int(code)
