"""Test support every kind of test shares: waiting for a condition, tools the tests need on PATH{% if cookiecutter.use_redis == "yes" %},
a Redis server of a test's own{% endif %}."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
{%- if cookiecutter.use_redis == "yes" %}
import signal
import subprocess
import tempfile
{%- endif %}
import time
{%- if cookiecutter.use_redis == "yes" %}
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
{%- else %}
from collections.abc import Awaitable, Callable
{%- endif %}
from typing import TYPE_CHECKING

import pytest
{%- if cookiecutter.use_redis == "yes" %}
import redis.asyncio as redis
{%- endif %}
import structlog

if TYPE_CHECKING:
    from .service import Service

POLL_INTERVAL = 0.02
"""Seconds between two looks at a condition."""

Check = Callable[[], object] | Callable[[], Awaitable[object]]

WITH_DETAIL: tuple[structlog.types.Processor, ...] = (
    structlog.contextvars.merge_contextvars,
    structlog.processors.format_exc_info,
)
"""`capture_logs(processors=WITH_DETAIL)`: each entry with its request id and, for
`log.exception`, the traceback as text (`exception`), as the service's log line has them."""


def _failed(what: str, within: float, service: Service | None) -> AssertionError:
    detail = f":\n{service.output()}" if service is not None else ""
    return AssertionError(f"not {what} within {within}s{detail}")


def _still_running(service: Service | None) -> None:
    if service is not None and service.process is not None:
        assert service.process.poll() is None, f"service exited:\n{service.output()}"


async def wait_until(
    check: Check,
    what: str = "the condition met",
    within: float = 15.0,
    service: Service | None = None,
) -> None:
    """Look at `check` (sync or async) every 20 ms until it returns something truthy; fail after
    `within` seconds naming `what`, or at once if `service` (a subprocess) exits meanwhile."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        _still_running(service)
        if time.monotonic() > deadline:
            raise _failed(what, within, service)
        await asyncio.sleep(POLL_INTERVAL)


def poll_until(
    check: Callable[[], object],
    what: str = "the condition met",
    within: float = 15.0,
    service: Service | None = None,
) -> None:
    """`wait_until` for code without an event loop (a test's thread, `Service` itself)."""
    deadline = time.monotonic() + within
    while not check():
        _still_running(service)
        if time.monotonic() > deadline:
            raise _failed(what, within, service)
        time.sleep(POLL_INTERVAL)


def require_tool(name: str, why: str) -> str:
    """The path of `name` on PATH. Without it the test skips locally and fails in CI (CI=true):
    a CI runner missing a tool must not pass by skipping."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is needed on PATH {why}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
{%- if cookiecutter.use_redis == "yes" %}


class RedisServer:
    """A throwaway redis-server on a free port of its own, stopped by its PID. With `keep_data`
    it writes an append-only file to a temp dir, so a restart (same port) finds its data again;
    without, a restart starts empty."""

    def __init__(self, *, keep_data: bool = True) -> None:
        from .service import free_port

        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="test-redis-") if keep_data else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, within: float = 15.0) -> None:
        """Start (or restart, same port) and wait until it answers PING."""
        binary = require_tool("redis-server", "for a Redis of the test's own")
        persistence = ["--appendonly", "yes", "--dir", self.dir] if self.dir else []
        self.process = await asyncio.to_thread(
            subprocess.Popen,
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--loglevel", "warning", *persistence),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

        async def answers() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, f"redis-server on port {self.port} exited"
            try:
                return bool(await client.ping())
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                return False  # ResponseError: LOADING the append-only file

        try:
            await wait_until(answers, f"redis-server on port {self.port} up", within)
        finally:
            await client.aclose()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean shutdown: the append-only file is flushed); returns its exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: an outage, not a clean shutdown."""
        self._end(signal.SIGKILL, 10)

    def _end(self, signum: signal.Signals, timeout: float) -> int:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process is not None else 0
        os.kill(process.pid, signum)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            return process.wait(timeout=5)


@asynccontextmanager
async def throwaway_redis(*, keep_data: bool = True) -> AsyncIterator[RedisServer]:
    server = RedisServer(keep_data=keep_data)
    try:
        await server.start()
        yield server
    finally:
        server.kill()
        if server.dir is not None:
            shutil.rmtree(server.dir, ignore_errors=True)
{%- endif %}
