"""Schema migrations: each version applied once, in its own transaction, serialized across
concurrent `migrate` commands by an advisory lock, and never run implicitly at start."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from {{ cookiecutter.package_name }}.app import MIGRATIONS
from {{ cookiecutter.package_name }}.platform import migrations
from {{ cookiecutter.package_name }}.platform.migrations import migrate

from .items_support import connect_schema, isolated_env, isolated_settings
from .service import PACKAGE, AllSettings, Service, drop_isolated, http_get
from .support import wait_until


@pytest.fixture
async def settings() -> AsyncIterator[AllSettings]:
    fresh = isolated_settings()
    yield fresh
    drop_isolated(isolated_env(fresh))


async def _applied(settings: AllSettings) -> list[str]:
    connection = await connect_schema(settings)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [row["version"] for row in rows]
    finally:
        await connection.close()


async def _tables(settings: AllSettings) -> set[str]:
    connection = await connect_schema(settings)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            settings.database_schema,
        )
        return {row["table_name"] for row in rows}
    finally:
        await connection.close()


async def test_applies_every_version_once(settings: AllSettings) -> None:
    versions = [path.stem for path in migrations.migration_files(MIGRATIONS)]
    assert versions == ["0000_outbox", "0001_items"]  # the platform's first
    assert await migrate(settings, MIGRATIONS) == versions
    assert {"items", "outbox", "processed_events", "schema_migrations"} <= await _tables(settings)
    assert await migrate(settings, MIGRATIONS) == []  # idempotent: nothing left to apply
    assert await _applied(settings) == versions


async def test_a_failing_migration_leaves_nothing_behind(
    settings: AllSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE second (id int); SELEC 1;")
    monkeypatch.setattr(migrations, "PLATFORM_MIGRATIONS", tmp_path)
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate(settings)
    assert await _applied(settings) == ["0001_first"]
    assert await _tables(settings) == {"first", "schema_migrations"}  # no `second`
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE second (id int);")
    assert await migrate(settings) == ["0002_broken"]
    assert await _tables(settings) == {"first", "second", "schema_migrations"}


async def test_concurrent_migrate_commands_apply_each_version_once(settings: AllSettings) -> None:
    """Four replicas' `migrate`, held at the same point until all four wait, then let go
    together: without the advisory lock, all would apply 0001 and three would fail."""
    env = Service(**isolated_env(settings)).env
    lock_key = zlib.crc32(f"{PACKAGE}.migrations.{settings.database_schema}".encode())
    gate = await connect_schema(settings)
    try:
        await gate.execute(
            f'CREATE SCHEMA "{settings.database_schema}";'
            " CREATE TABLE schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
            " BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE;"
        )

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", PACKAGE, "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        commands = [asyncio.ensure_future(asyncio.to_thread(run)) for _ in range(4)]

        async def all_waiting() -> bool:
            waiting = await gate.fetchval(
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND ("
                " pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                " OR (locktype = 'advisory' AND classid = 0 AND objid = $1::bigint::oid))",
                lock_key,
            )
            return bool(waiting == len(commands))

        await wait_until(all_waiting, "four migrate commands waiting", 40)
        await gate.execute("ROLLBACK")
        results = await asyncio.gather(*commands)
    finally:
        await gate.close()
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
    applied = []
    for result in results:
        for line in result.stdout.splitlines():
            event = json.loads(line)
            if event["event"] == "migrations_done":
                applied.append(event["applied"])
    versions = [path.stem for path in migrations.migration_files(MIGRATIONS)]
    assert sorted(applied, key=len) == [[], [], [], versions]
    assert await _applied(settings) == versions


async def test_migrate_fails_with_exit_code_when_postgres_is_down(settings: AllSettings) -> None:
    result = await _migrate_against_a_closed_port(settings)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "command_failed" in result.stdout


async def test_a_failed_migrate_does_not_log_the_password(settings: AllSettings) -> None:
    result = await _migrate_against_a_closed_port(settings)
    assert "hunter2" not in result.stdout + result.stderr


async def _migrate_against_a_closed_port(settings: AllSettings) -> subprocess.CompletedProcess[str]:
    env = Service(**isolated_env(settings)).env
    env["DATABASE_URL"] = "postgresql://postgres:hunter2@127.0.0.1:1/test"
    env["DB_CONNECT_TIMEOUT"] = "2"
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", PACKAGE, "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_service_never_migrates_at_start(settings: AllSettings) -> None:
    service = Service(**isolated_env(settings))
    service.start()
    try:
        await asyncio.to_thread(service.wait_ready)
        status, body, _ = await asyncio.to_thread(http_get, f"{service.url}/readyz")
        assert (status, body["status"]) == (200, "ready")
        assert not await _schema_exists(settings)
    finally:
        service.kill()


async def _schema_exists(settings: AllSettings) -> bool:
    connection = await asyncpg.connect(AllSettings.model_fields["database_url"].default)
    try:
        return bool(
            await connection.fetchval(
                "SELECT true FROM information_schema.schemata WHERE schema_name = $1",
                settings.database_schema,
            )
        )
    finally:
        await connection.close()
