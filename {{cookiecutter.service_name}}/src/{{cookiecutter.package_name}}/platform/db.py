"""PostgreSQL: the asyncpg pool as a component. Connects in the background, closes last."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, TypeAlias

import asyncpg
from prometheus_client import Gauge
from pydantic import Field, model_validator
from typing_extensions import override

from .dependency import Dependency
from .errors import dependency_failures
from .logs import log
from .readiness import Readiness
from .settings import Settings, SettingsGroup, dependency_url

dependency_failures(
    asyncpg.PostgresConnectionError,  # lost mid-query, refused, ...
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
)

Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
"""A connection checked out of the pool (what handlers and effects receive)."""

DB_POOL_SIZE = Gauge("db_pool_connections", "Connections open in the asyncpg pool.")
DB_POOL_IDLE = Gauge("db_pool_idle_connections", "Connections of the asyncpg pool not in use.")


class PostgresSettings(SettingsGroup):
    """The database and the pool."""

    database_url: Annotated[str, dependency_url("postgresql", "postgres")] = (
        "postgresql://postgres@127.0.0.1:5432/test"
    )
    database_schema: str = Field(default="public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_command_timeout: float = Field(default=30.0, gt=0)
    db_close_timeout: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _pool_sizes(self) -> PostgresSettings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        return self


class PostgresPool(Dependency):
    """An asyncpg pool: not ready until connected; closed in the last phase, bounded."""

    name = "postgres"

    def __init__(
        self, settings: Settings, postgres: PostgresSettings, readiness: Readiness
    ) -> None:
        super().__init__(settings, readiness, postgres.database_url)
        self._postgres = postgres
        self._pool: asyncpg.Pool | None = None

    @override
    async def connect(self) -> None:
        settings = self._postgres
        self._pool = pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_connect_timeout,
            command_timeout=settings.db_command_timeout,
            server_settings={"search_path": settings.database_schema},
        )
        DB_POOL_SIZE.set_function(pool.get_size)
        DB_POOL_IDLE.set_function(pool.get_idle_size)

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool; DependencyUnavailableError (503) while connecting or closing."""
        self.ensure_available()
        assert self._pool is not None
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection inside a transaction (committed on success, else rolled back)."""
        async with self.pool.acquire() as connection, connection.transaction():
            yield connection

    @override
    async def disconnect(self) -> None:
        """Graceful close within its budget, then terminate, naming what was still checked out."""
        pool = self._pool
        if pool is None:
            return
        closing = asyncio.ensure_future(pool.close())
        try:
            await asyncio.wait({closing}, timeout=self._postgres.db_close_timeout)
        finally:
            if not closing.done():
                # Counted before cancelling: a cancelled close() terminates every connection,
                # after which none looks checked out any more.
                busy = pool.get_size() - pool.get_idle_size()
                log.warning("postgres_pool_terminated", connections_checked_out=busy)
                closing.cancel()
                await asyncio.gather(closing, return_exceptions=True)
                pool.terminate()
        if not closing.cancelled():
            closing.result()  # an error of the graceful close itself
