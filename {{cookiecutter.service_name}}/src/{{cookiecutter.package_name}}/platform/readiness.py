"""Readiness: one flag for `/readyz` and gRPC health, owned by the root scope."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .logs import log

ReadinessListener = Callable[[bool, bool], Awaitable[None]]
"""Called with (ready, shutting_down) whenever either changes."""


class Readiness:
    """Ready means: every component started, no dependency missing, not shutting down."""

    def __init__(self) -> None:
        self._started = False
        self.was_ready = False
        self._last_reported = False
        """Whether the service has ever been ready (a failure before that is a failed start)."""
        self._shutting_down = False
        self._waiting_for: set[str] = set()
        self._listeners: list[ReadinessListener] = []

    @property
    def ready(self) -> bool:
        return self._started and not self._shutting_down and not self._waiting_for

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def reason(self) -> str:
        """Why the service is not ready, for humans reading `/readyz`."""
        if self._shutting_down:
            return "shutting down"
        if not self._started:
            return "starting"
        if self._waiting_for:
            return "waiting for " + ", ".join(sorted(self._waiting_for))
        return "ready"

    def subscribe(self, listener: ReadinessListener) -> None:
        self._listeners.append(listener)

    async def mark_started(self) -> None:
        self._started = True
        await self._notify()

    async def waiting_for(self, dependency: str) -> None:
        self._waiting_for.add(dependency)
        await self._notify()

    async def connected(self, dependency: str) -> None:
        self._waiting_for.discard(dependency)
        await self._notify()

    async def shut_down(self) -> None:
        """Readiness off for good: the first phase of shutdown."""
        self._shutting_down = True
        await self._notify()

    async def _notify(self) -> None:
        ready, shutting_down = self.ready, self._shutting_down
        if ready != self._last_reported:
            self._last_reported = ready
            log.info("readiness_changed", ready=ready, reason=self.reason())
        self.was_ready = self.was_ready or ready
        await asyncio.gather(*(listener(ready, shutting_down) for listener in self._listeners))
