"""Secrets stay secret: the passwords of DATABASE_URL and REDIS_URL appear in no log line, no
metric and no answer, through start, a dependency outage and shutdown.

The local PostgreSQL trusts every password and the local Redis's default user takes any, so a
service works with passwords in both URLs; each case points one of them at a closed port: an
outage, with both passwords in hand the whole time.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiohttp
import pytest

from .service import PACKAGE, Service, drop_isolated, free_port

DB_SECRET = "Db-S3cret-7f1c9e"
REDIS_SECRET = "Redis-S3cret-2b8d4a"

OUTAGES = {
    "redis-unreachable": {
        "DATABASE_URL": f"postgresql://postgres:{DB_SECRET}@127.0.0.1:5432/test",
        "REDIS_URL": f"redis://default:{REDIS_SECRET}@127.0.0.1:{free_port()}/0",
    },
    "database-unreachable": {
        "DATABASE_URL": f"postgresql://postgres:{DB_SECRET}@127.0.0.1:{free_port()}/test",
        # The default user without a password set takes any: Redis works.
        "REDIS_URL": f"redis://default:{REDIS_SECRET}@127.0.0.1:6379/0",
    },
}


async def _answers(service: Service) -> list[str]:
    """The public and admin answers a client or a scraper sees during the outage."""
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
    return bodies


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_passwords_never_leave_the_process(outage: str) -> None:
    service = Service(DRAIN_DELAY="0.2", SHUTDOWN_TIMEOUT="5", **OUTAGES[outage])
    if outage == "redis-unreachable":  # the database works: migrate it, as a deployment would
        migrated = service.run_command("migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert DB_SECRET not in migrated.stdout + migrated.stderr
    service.start()
    try:
        await asyncio.to_thread(service.wait_for_event, "http_listening", 30)
        await asyncio.sleep(1.5)  # reconnection attempts fail and are logged meanwhile
        answers = await _answers(service)
        service.signal(signal.SIGTERM)
        code = await asyncio.to_thread(service.wait_exit, 15)
    finally:
        service.kill()
        # Cleaned up through the default URLs: the test's own point at a closed port.
        drop_isolated({k: v for k, v in service.env.items() if not k.endswith("_URL")})
    everything = "\n".join([*service.lines, *answers])
    assert code == 0, service.output()
    assert any("503" in answer for answer in answers[1:3]), answers  # the outage was seen
    for secret in (DB_SECRET, REDIS_SECRET):
        leaks = [line for line in everything.splitlines() if secret in line]
        assert leaks == []


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", f"postgresql://postgres:{DB_SECRET}@127.0.0.1:notaport/test"),
        ("DATABASE_URL", f"mysql://postgres:{DB_SECRET}@127.0.0.1/test"),
        ("REDIS_URL", f"redis://:{REDIS_SECRET}@127.0.0.1:99999999/0"),
        ("REDIS_URL", f"http://:{REDIS_SECRET}@127.0.0.1/0"),
    ],
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
    for secret in (DB_SECRET, REDIS_SECRET):
        assert secret not in result.stdout + result.stderr
