"""Tracking of in-flight work, so shutdown can wait for it and name it if it hangs."""

from __future__ import annotations

import asyncio
from types import TracebackType


class InFlight:
    """The set of tasks currently serving a request, an RPC or a message."""

    __slots__ = ("_idle", "running")

    def __init__(self) -> None:
        self.running: set[asyncio.Task[object]] = set()
        """The tasks in flight (read it, never change it: `enter` and `discard` do). `len` of it
        is the hot path's overload check, without a method call."""
        self._idle: asyncio.Event | None = None
        """Made by `wait_idle` when it has to wait, set (and dropped) when the set empties: a
        request that finds nobody waiting does not touch it (two method calls saved on every
        request)."""

    def __len__(self) -> int:
        return len(self.running)

    def track(self, name: str) -> Tracked:
        """Register the current task under `name` (shown if shutdown has to cancel it) for the
        duration of a `with` block, which returns the task."""
        return Tracked(self, name)

    def enter(self, name: str) -> asyncio.Task[object]:
        """Register the current task under `name` until `discard`; returns the task."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always called from a task
            raise RuntimeError("InFlight needs a running task")
        task.set_name(name)
        self.running.add(task)
        return task

    def discard(self, task: asyncio.Task[object]) -> None:
        tasks = self.running
        tasks.discard(task)
        if not tasks and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Returns once no task is in flight (at once if none is)."""
        if self.running:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    def tasks(self) -> list[asyncio.Task[object]]:
        return list(self.running)


class Tracked:
    """`InFlight.track`'s context manager: a plain class, as it runs once per request (a
    generator-based one costs a generator and two extra frames each time)."""

    __slots__ = ("_in_flight", "_name", "_task")

    def __init__(self, in_flight: InFlight, name: str) -> None:
        self._in_flight = in_flight
        self._name = name

    def __enter__(self) -> asyncio.Task[object]:
        self._task = self._in_flight.enter(self._name)
        return self._task

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._in_flight.discard(self._task)
