"""Schema migrations: the `migrate` command (`python -m <package> migrate`), never run at start.

Versioned SQL files are applied once each, in order, each in its own transaction, under a Postgres
advisory lock so that replicas (or Jobs) started together apply them one at a time: first the
platform's own (`sql/`: the outbox and the consumer's processed events), then each feature's
directory, in the order `app.MIGRATIONS` lists them. A file's name without `.sql` is its version,
unique across all directories.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from .db import PostgresSettings
from .dependency import redact_url
from .logs import log

PLATFORM_MIGRATIONS = Path(__file__).parent / "sql"


def migration_files(feature_dirs: Sequence[Path] = ()) -> list[Path]:
    """The platform's migrations, then each feature's, each directory in name order."""
    files = [
        path
        for folder in (PLATFORM_MIGRATIONS, *feature_dirs)
        for path in sorted(folder.glob("*.sql"))
    ]
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ValueError(f"migration version {path.stem} is in {seen[path.stem]} and {path}")
        seen[path.stem] = path
    return files


async def migrate(settings: PostgresSettings, feature_dirs: Sequence[Path] = ()) -> list[str]:
    """Apply the pending migrations; returns the versions applied now."""
    files = migration_files(feature_dirs)
    schema = settings.database_schema  # validated as a plain identifier by PostgresSettings
    # The key of when this module was `<package>.migrations`: old and new Jobs exclude each other.
    lock_key = zlib.crc32(f"{__name__.partition('.')[0]}.migrations.{schema}".encode())
    connection = await asyncpg.connect(
        settings.database_url,
        timeout=settings.db_connect_timeout,
        server_settings={"search_path": schema},
    )
    applied_now: list[str] = []
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await connection.fetch("SELECT version FROM schema_migrations")
            done = {row["version"] for row in rows}
            for path in files:
                if path.stem in done:
                    continue
                async with connection.transaction():
                    await connection.execute(path.read_text(encoding="utf-8"))
                    await connection.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", path.stem
                    )
                applied_now.append(path.stem)
                log.info("migration_applied", version=path.stem, schema=schema)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", lock_key)
    finally:
        await connection.close()
    log.info(
        "migrations_done",
        url=redact_url(settings.database_url),
        schema=schema,
        applied=applied_now,
    )
    return applied_now
