"""Runs the real service as a subprocess, the way an orchestrator does, for integration tests."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
{%- if cookiecutter.use_postgres == "yes" %}

import asyncpg
import redis.asyncio as redis
{%- endif %}

{% if cookiecutter.use_consumer == "yes" -%}
from {{ cookiecutter.package_name }}.platform.consumer import ConsumerSettings
{% endif -%}
{% if cookiecutter.use_postgres == "yes" -%}
from {{ cookiecutter.package_name }}.platform.db import PostgresSettings
{% endif -%}
{% if cookiecutter.use_grpc == "yes" -%}
from {{ cookiecutter.package_name }}.platform.grpc_server import GrpcSettings
{% endif -%}
{% if cookiecutter.use_postgres == "yes" -%}
from {{ cookiecutter.package_name }}.platform.outbox import OutboxSettings
from {{ cookiecutter.package_name }}.platform.redis_client import RedisSettings
{% endif -%}
from {{ cookiecutter.package_name }}.platform.settings import Settings
{% if cookiecutter.use_tracing == "yes" -%}
from {{ cookiecutter.package_name }}.platform.tracing import TracingSettings
{% endif %}
from .support import poll_until

PACKAGE = "{{ cookiecutter.package_name }}"


class AllSettings(
    Settings,
{%- if cookiecutter.use_grpc == "yes" %}
    GrpcSettings,
{%- endif %}
{%- if cookiecutter.use_postgres == "yes" %}
    PostgresSettings,
    RedisSettings,
    OutboxSettings,
{%- endif %}
{%- if cookiecutter.use_consumer == "yes" %}
    ConsumerSettings,
{%- endif %}
{%- if cookiecutter.use_tracing == "yes" %}
    TracingSettings,
{%- endif %}
):
    """The platform's settings and its options' in one object, for tests that build components
    by hand (`PostgresPool(settings, settings, readiness)`); the service reads each group apart."""


def isolated_names() -> dict[str, str]:
    """A schema, streams and keys of its own, so tests never see each other's data."""
    tag = uuid.uuid4().hex[:12]
    return {
        "DATABASE_SCHEMA": f"test_{tag}",
        "EVENTS_STREAM": f"test.{tag}.events",
        "DEAD_LETTER_STREAM": f"test.{tag}.events.dead",
        "CONSUMER_GROUP": f"test-{tag}",
        "CACHE_PREFIX": f"test:{tag}:",
    }


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before: the kernel may give
    a port just released again, and two servers of a test would then collide."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A fresh connection per call (no keep-alive): (status, JSON body, headers)."""
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


class Service:
    """One service process: its ports, its JSON log lines, signals and exit."""

    def __init__(self, **env: str) -> None:
        self.env = {
            **os.environ,
            "HTTP_HOST": "127.0.0.1",
            "GRPC_HOST": "127.0.0.1",
            "ADMIN_HOST": "127.0.0.1",
            "LOG_FORMAT": "json",
            "DRAIN_DELAY": "0.5",
            "SHUTDOWN_TIMEOUT": "10",
            **isolated_names(),
        }
        self._pick_ports()
        self.env.update(env)
        self._own_ports = not {"HTTP_PORT", "GRPC_PORT", "ADMIN_PORT"} & env.keys()
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def _pick_ports(self) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.env["HTTP_PORT"] = str(self.http_port)
        self.env["GRPC_PORT"] = str(self.grpc_port)
        self.env["ADMIN_PORT"] = str(self.admin_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def run_command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run another subcommand (e.g. `migrate`) with this service's environment."""
        return subprocess.run(
            [sys.executable, "-m", PACKAGE, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", PACKAGE],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        restarts = 0
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                # A port picked here can be taken by another test process before the service
                # binds it (pytest workers and bakes run side by side): new ports, once more.
                if self._reader is not None:
                    self._reader.join(timeout=5)  # every line it wrote
                if self._own_ports and restarts < 3 and "Address already in use" in self.output():
                    restarts += 1
                    self._pick_ports()
                    self.lines.clear()
                    self.start()
                    continue
                raise AssertionError(f"service exited early:\n{self.output()}")
            try:
                if http_get(f"{self.url}/readyz", timeout=1.0)[0] == 200:
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass  # not listening yet, or another process's port (not HTTP, not JSON)
            time.sleep(0.05)
        raise AssertionError(f"service not ready within {timeout}s:\n{self.output()}")

    def signal(self, signum: int = signal.SIGTERM) -> float:
        """Send a signal; returns the monotonic time it was sent."""
        assert self.process is not None
        os.kill(self.process.pid, signum)
        return time.monotonic()

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines, optionally only those with `event == name`."""
        parsed = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                parsed.append(event)
        return parsed

    def wait_for_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        try:  # not failing when the process exits: its last lines may still be on their way
            poll_until(lambda: self.events(name), f"a {name!r} event logged", timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{self.output()}") from None
        return self.events(name)[0]

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def running_service(**env: str) -> Iterator[Service]:
    """A started, ready service; killed (by its own PID) if a test leaves it running."""
    service = Service(**env)
{%- if cookiecutter.use_postgres == "yes" %}
    migrated = service.run_command("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
{%- endif %}
    service.start()
    try:
        service.wait_ready()
        yield service
    finally:
        service.kill()
        drop_isolated(service.env)


def drop_isolated(env: dict[str, str]) -> None:
    """Remove a test's schema, streams and keys (in a thread: callers may run an event loop)."""

    async def drop() -> None:
        """Drop what this service's settings point at (nothing without Postgres or Redis)."""
{%- if cookiecutter.use_postgres == "yes" %}
        url = env.get("DATABASE_URL", PostgresSettings.model_fields["database_url"].default)
        connection = await asyncpg.connect(url)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{env["DATABASE_SCHEMA"]}" CASCADE')
        await connection.close()
{%- endif %}
{%- if cookiecutter.use_redis == "yes" %}
        redis_url = env.get("REDIS_URL", RedisSettings.model_fields["redis_url"].default)
        client = redis.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{env['CACHE_PREFIX']}*")]
        await client.delete(env["EVENTS_STREAM"], env["DEAD_LETTER_STREAM"], *keys)
        await client.aclose()
{%- endif %}

    worker = threading.Thread(target=asyncio.run, args=(drop(),))
    worker.start()
    worker.join(timeout=30)
