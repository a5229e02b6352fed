"""Tracking of in-flight work, so shutdown can wait for it and name it if it hangs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """The set of tasks currently serving a request, an RPC or a message."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._tasks)

    @contextmanager
    def track(self, name: str) -> Iterator[asyncio.Task[object]]:
        """Register the current task under `name` (shown if shutdown has to cancel it)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always called from a task
            raise RuntimeError("InFlight.track() needs a running task")
        task.set_name(name)
        self._tasks.add(task)
        self._idle.clear()
        try:
            yield task
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def tasks(self) -> list[asyncio.Task[object]]:
        return list(self._tasks)
