"""What the Postgres and Redis components share: connecting with retries, and 'not available'."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from typing_extensions import override

from .errors import UnavailableError
from .lifecycle import Component
from .logs import log
from .readiness import Readiness
from .settings import Settings


class DependencyUnavailableError(UnavailableError):
    """A dependency is not connected (yet) or is closing: HTTP 503 / gRPC UNAVAILABLE."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is not available")
        self.dependency = dependency


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


async def connect_with_retries(
    name: str, display_url: str, connect: Callable[[], Awaitable[object]], settings: Settings
) -> None:
    """Call `connect` until it succeeds, backing off exponentially (capped), for at most
    DEPENDENCY_CONNECT_TIMEOUT seconds; then raise, which stops the service (exit code 3)."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + settings.dependency_connect_timeout
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            await connect()
        except Exception as error:
            if loop.time() + delay > give_up_at:
                reason = str(error) or repr(error)
                log.error("dependency_unreachable", dependency=name, url=display_url, error=reason)
                raise
            log.warning(
                "dependency_waiting",
                dependency=name,
                url=display_url,
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=str(error) or repr(error),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.dependency_max_backoff)
        else:
            log.info("dependency_connected", dependency=name, url=display_url, attempts=attempt)
            return


class Dependency(Component):
    """A backing service: connects in the background (readiness waits for it), closes last.

    Subclasses implement one connection attempt (`connect`) and `disconnect`; handlers reach the
    client through a property that calls `ensure_available` first.
    """

    def __init__(self, settings: Settings, readiness: Readiness, url: str) -> None:
        self._settings = settings
        self._readiness = readiness
        self._url = url
        self._connecting: asyncio.Task[None] | None = None
        self._connected = False
        self._closing = False

    async def connect(self) -> None:
        """One connection attempt; raise to be retried."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        """Close the client or pool, within the `close` phase's budget."""
        raise NotImplementedError

    def ensure_available(self) -> None:
        if not self._connected or self._closing:
            raise DependencyUnavailableError(self.name)

    @override
    async def start(self) -> None:
        await self._readiness.waiting_for(self.name)
        self._connecting = self.spawn(self._connect_with_retries(), "connect", until_stopped=False)

    async def _connect_with_retries(self) -> None:
        await connect_with_retries(self.name, redact_url(self._url), self.connect, self._settings)
        self._connected = True
        await self._readiness.connected(self.name)

    @override
    async def stop_tasks(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)

    @override
    async def close(self) -> None:
        self._closing = True  # from here on, nothing new acquires a connection
        await self.disconnect()
