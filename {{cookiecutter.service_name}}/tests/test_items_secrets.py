"""Secrets stay secret: the passwords of DATABASE_URL and REDIS_URL appear in no log line, no
metric and no answer, through start, a dependency outage and shutdown, nor in the messages of a
refused setting (exit 2) or of a dependency given up on (exit 3).

The passwords hold characters a URL must percent-encode, and the URLs carry them encoded, as an
operator writes them: neither form, nor the distinctive part both share, may come out. The local
PostgreSQL trusts every password and the local Redis's default user takes any, so a service works
with passwords in both URLs. Each outage hits one dependency, with both passwords in hand the
whole time: unreachable from the start (a closed port), or lost while serving (a proxy of the
test's own cut, a Redis of the test's own killed) and back before the shutdown.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from urllib.parse import quote, quote_plus

import aiohttp
{%- if cookiecutter.use_grpc == "yes" %}
import grpc
{%- endif %}
import pytest

{%- if cookiecutter.use_grpc == "yes" %}

from {{ cookiecutter.package_name }}.v1 import items_pb2, items_pb2_grpc
{%- endif %}

from .items_support import DEFAULT_DATABASE_URL, TcpProxy
from .service import PACKAGE, Service, drop_isolated, free_port, isolated_names
from .support import RedisServer

DB_CORE, REDIS_CORE = "Db7f1c9eS3cret", "Rd2b8d4aS3cret"
"""What each password's every form contains: found anywhere, a form of it leaked."""
DB_SECRET = f"p:{DB_CORE}/@%?#&= "
REDIS_SECRET = f"p:{REDIS_CORE}/@%?#&= "
LEAKS = (
    *(DB_SECRET, quote(DB_SECRET, safe=""), quote_plus(DB_SECRET), DB_CORE),
    *(REDIS_SECRET, quote(REDIS_SECRET, safe=""), quote_plus(REDIS_SECRET), REDIS_CORE),
)
"""The passwords as they are, percent-encoded both ways, and their distinctive part."""


def database_url(port: int = 5432) -> str:
    return f"postgresql://postgres:{quote(DB_SECRET, safe='')}@127.0.0.1:{port}/test"


def redis_url(port: int = 6379) -> str:
    # The default user without a password set takes any: Redis works.
    return f"redis://default:{quote(REDIS_SECRET, safe='')}@127.0.0.1:{port}/0"


def assert_no_leak(texts: list[str]) -> None:
    lines = "\n".join(texts).splitlines()
    leaks = [(form, line) for line in lines for form in LEAKS if form in line]
    assert leaks == []


async def _answers(service: Service) -> list[str]:
    """The public and admin answers a client or a scraper sees (statuses, headers, bodies)."""
    bodies = []
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for method, url, body in (
            ("GET", f"{service.url}/livez", None),
            ("GET", f"{service.url}/readyz", None),
            ("POST", f"{service.url}/v1/items", {"name": "widget", "quantity": 1}),
            ("GET", f"{service.url}/v1/items/1", None),
            ("GET", f"{service.admin_url}/metrics", None),
        ):
            async with session.request(method, url, json=body) as response:
                bodies.append(f"{response.status} {dict(response.headers)} {await response.text()}")
{%- if cookiecutter.use_grpc == "yes" %}
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        stub = items_pb2_grpc.ItemServiceStub(channel)
        for call in (
            stub.CreateItem(items_pb2.CreateItemRequest(name="widget", quantity=1), timeout=15),
            stub.GetItem(items_pb2.GetItemRequest(id=1), timeout=15),
        ):
            try:
                reply = await call
                bodies.append(f"OK {reply} {await call.trailing_metadata()}")
            except grpc.aio.AioRpcError as error:
                trailers = error.trailing_metadata()
                bodies.append(f"{error.code()} {error.details()} {trailers} {error!r}")
{%- endif %}
    return bodies


def _migrate(service: Service) -> None:
    """The service's schema, migrated as a deployment would (through the working URL)."""
    names = {key: service.env[key] for key in isolated_names()}
    migrated = Service(**names, DATABASE_URL=database_url()).run_command("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert_no_leak([migrated.stdout, migrated.stderr])


async def _run_through(service: Service, outage: str) -> list[str]:
    """Start, the outage (answers collected during it), shutdown: every answer seen."""
    _migrate(service)
    proxy = TcpProxy() if outage == "database-lost" else None
    redis_server = RedisServer(keep_data=False) if outage == "redis-lost" else None
    if proxy is not None:
        proxy.up()
        service.env["DATABASE_URL"] = database_url(proxy.port)
    if redis_server is not None:
        await redis_server.start()
        service.env["REDIS_URL"] = redis_url(redis_server.port)
    answers = []
    service.start()
    try:
        if outage.endswith("-unreachable"):
            await asyncio.to_thread(service.wait_for_event, "http_listening", 30)
            await asyncio.sleep(1.5)  # reconnection attempts fail and are logged meanwhile
            answers += await _answers(service)
        else:
            await asyncio.to_thread(service.wait_ready, 30)
            answers += await _answers(service)  # served, with both passwords in use
            if proxy is not None:
                proxy.down()
            if redis_server is not None:
                redis_server.kill()
            answers += await _answers(service)
            await asyncio.sleep(1.0)  # reconnection attempts fail and are logged meanwhile
            if proxy is not None:
                proxy.up()
            if redis_server is not None:
                await redis_server.start()
            await asyncio.to_thread(service.wait_ready, 30)
        service.signal(signal.SIGTERM)
        code = await asyncio.to_thread(service.wait_exit, 20)
        assert code == 0, service.output()
    finally:
        service.kill()
        if proxy is not None:
            proxy.close()
        if redis_server is not None:
            redis_server.kill()
        # Cleaned up through the default URLs (the test's own may point at a closed port).
        env = {key: value for key, value in service.env.items() if not key.endswith("_URL")}
        drop_isolated(env | {"DATABASE_URL": DEFAULT_DATABASE_URL})
    return answers


OUTAGES = {
    "redis-unreachable": {"DATABASE_URL": database_url(), "REDIS_URL": redis_url(free_port())},
    "database-unreachable": {"DATABASE_URL": database_url(free_port()), "REDIS_URL": redis_url()},
    "database-lost": {"REDIS_URL": redis_url()},  # DATABASE_URL: through the test's proxy
    "redis-lost": {"DATABASE_URL": database_url()},  # REDIS_URL: the test's own Redis
}


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_passwords_never_leave_the_process(outage: str) -> None:
    service = Service(DRAIN_DELAY="0.2", SHUTDOWN_TIMEOUT="5", **OUTAGES[outage])
    answers = await _run_through(service, outage)
    # The outage was seen: refused answers, failures logged.
    if outage.endswith("-unreachable"):
        assert any(answer.startswith("503") for answer in answers[1:3]), answers
        assert service.events("dependency_waiting"), service.output()
    elif outage == "database-lost":
        assert any(answer.startswith("503") for answer in answers), answers
        assert service.events("http_dependency_failed"), service.output()
    else:
        assert service.events("outbox_publish_failed") or service.events("cache_unavailable")
    # The passwords were in use: every dependency but an unreachable one was connected to.
    unreachable = {"redis-unreachable": {"redis"}, "database-unreachable": {"postgres"}}
    connected = {event["dependency"] for event in service.events("dependency_connected")}
    assert connected == {"postgres", "redis"} - unreachable.get(outage, set())
    assert_no_leak([*service.lines, *answers])


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", database_url().replace(":5432/", ":notaport/")),
        ("DATABASE_URL", database_url().replace("postgresql://", "mysql://")),
        ("DATABASE_URL", database_url().replace("@127.0.0.1", "@[::1")),  # unbalanced bracket
        ("REDIS_URL", redis_url(99999999)),
        ("REDIS_URL", redis_url().replace("redis://", "http://")),
        ("REDIS_URL", f"redis://default:{REDIS_SECRET}@127.0.0.1:6379/0"),  # not encoded
    ],
    ids=["port", "scheme", "ipv6", "redis-port", "redis-scheme", "redis-unencoded"],
)
def test_an_invalid_url_exits_2_naming_the_variable_not_its_value(variable: str, url: str) -> None:
    """Refused before any port is bound, and the message does not quote the URL's password."""
    service = Service(**{variable: url})
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert variable in result.stderr
    assert_no_leak([result.stdout, result.stderr])


def test_a_dependency_given_up_on_exits_3_without_its_password() -> None:
    """DEPENDENCY_CONNECT_TIMEOUT spent: the last error is logged, the password is not."""
    service = Service(
        DATABASE_URL=database_url(free_port()),
        REDIS_URL=redis_url(free_port()),
        DEPENDENCY_CONNECT_TIMEOUT="1",
    )
    service.start()
    try:
        assert service.wait_exit(30) == 3, service.output()
    finally:
        service.kill()
    assert service.events("dependency_unreachable"), service.output()
    assert_no_leak(service.lines)
