"""Redis: the `redis.asyncio` client (and its connection pool) as a component."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from typing_extensions import override

from .dependency import Dependency
from .readiness import Readiness
from .settings import Settings


class RedisClient(Dependency):
    """One client for the service: not ready until a PING succeeds; closed in the last phase."""

    name = "redis"

    def __init__(self, settings: Settings, readiness: Readiness) -> None:
        super().__init__(settings, readiness, settings.redis_url)
        self._client = redis.Redis.from_url(  # connects lazily
            settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=settings.redis_socket_timeout,
            # Above the consumer's XREADGROUP BLOCK, so a blocking read is never cut short.
            socket_timeout=settings.redis_socket_timeout,
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
