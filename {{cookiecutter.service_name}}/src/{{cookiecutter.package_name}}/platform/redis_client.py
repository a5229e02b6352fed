"""Redis: the `redis.asyncio` client (and its connection pool) as a component."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as redis
from pydantic import Field
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from typing_extensions import override

from .dependency import Dependency
from .errors import dependency_failures
from .readiness import Readiness
from .settings import Settings, SettingsGroup, dependency_url

dependency_failures(redis.ConnectionError, redis.TimeoutError)  # (BusyLoadingError is one)


class RedisSettings(SettingsGroup):
    """The Redis server."""

    redis_url: Annotated[str, dependency_url("redis", "rediss", "unix")] = (
        "redis://127.0.0.1:6379/0"
    )
    redis_socket_timeout: float = Field(default=5.0, gt=0)


class RedisClient(Dependency):
    """One client for the service: not ready until a PING succeeds; closed in the last phase."""

    name = "redis"

    def __init__(
        self, settings: Settings, redis_settings: RedisSettings, readiness: Readiness
    ) -> None:
        super().__init__(settings, readiness, redis_settings.redis_url)
        self.socket_timeout = redis_settings.redis_socket_timeout
        """Seconds a command may take (blocking reads must ask for less)."""
        self._client = redis.Redis.from_url(  # connects lazily
            redis_settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=self.socket_timeout,
            # Above the consumer's XREADGROUP BLOCK, so a blocking read is never cut short.
            socket_timeout=self.socket_timeout,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            health_check_interval=30,
        )

    @override
    async def connect(self) -> None:
        await self._client.ping()

    @property
    def client(self) -> redis.Redis:
        """The client; DependencyUnavailableError (503) while connecting or closing."""
        self.ensure_available()
        return self._client

    @override
    async def disconnect(self) -> None:
        await self._client.aclose()  # closes its connection pool too
