"""Long-lived HTTP streams (WebSocket, Server-Sent Events): tracked apart from requests, and
ended as soon as the listeners close.

A stream never finishes by itself, so the drain phase must not wait for it. Each stream's handler
says, right after its response is prepared, how it ends when the server shuts down (a close
frame, a final event); `Streams.end_all` runs every one of those at once, gives them `END_TIMEOUT`
(the close handshake, the last write), then cuts what is left. Requests keep the rest of the
drain budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Literal

from aiohttp import web

from .inflight import InFlight
from .logs import log
from .metrics import HTTP_OPEN_STREAMS, HTTP_STREAM_MESSAGES, HTTP_STREAMS_ENDED

StreamKind = Literal["websocket", "sse"]
EndedBy = Literal["client", "shutdown", "slow", "error"]

END_TIMEOUT = 0.5
"""Seconds a stream gets to end once the shutdown tells it to (a WebSocket's close handshake, an
SSE stream's final event); after that its connection is cut. Well under a second: streams end
right after the listeners close, and in-flight requests keep the rest of the drain budget."""

SHUTTING_DOWN = "server shutting down"


class OpenStream:
    """One stream, as its handler and the shutdown see it."""

    __slots__ = (
        "_end",
        "_ending",
        "_streams",
        "ended_by",
        "kind",
        "response",
        "route",
        "sent",
        "started",
        "task",
    )

    def __init__(self, streams: Streams, kind: StreamKind, route: str, task_name: str) -> None:
        self._streams = streams
        self.kind = kind
        self.route = route
        self.started = perf_counter()
        self.task = streams.tasks.enter(task_name)
        self.sent = 0
        """Messages sent to the client (echoes, events); the handler counts them."""
        self.ended_by: EndedBy = "client"
        self.response: web.StreamResponse | None = None
        self._end: Callable[[], Awaitable[object]] | None = None
        self._ending: asyncio.Task[object] | None = None

    def serving(self, response: web.StreamResponse, end: Callable[[], Awaitable[object]]) -> None:
        """Call right after `response.prepare()`: from now on the shutdown ends this stream by
        awaiting `end()` (bounded by END_TIMEOUT). A stream that gets here after the shutdown
        ended the others is ended at once."""
        self.response = response
        self._end = end
        if self._streams.ending:
            self.end()

    def message_sent(self) -> None:
        self.sent += 1
        HTTP_STREAM_MESSAGES.labels(self.kind).inc()

    def end(self) -> asyncio.Task[object] | None:
        """Start ending the stream (once); the task runs the handler's `end`."""
        if self._ending is None and self._end is not None:
            self.ended_by = "shutdown"
            self._ending = asyncio.create_task(_awaited(self._end()), name=f"end {self.kind}")
        return self._ending

    async def ended(self) -> None:
        """Wait until the shutdown's `end` (if it ran) has finished: a WebSocket's close
        handshake completes before its handler lets the connection go."""
        if self._ending is not None:
            await asyncio.wait([self._ending])


async def _awaited(awaitable: Awaitable[object]) -> object:
    return await awaitable


class Streams:
    """Every open stream of the HTTP server: counted, logged when it ends, ended on shutdown."""

    def __init__(self, access_log: bool) -> None:
        self.tasks = InFlight()
        """The streams' handler tasks (named, so a hang is reported like a request's)."""
        self.ended_by_shutdown = 0
        self._open: set[OpenStream] = set()
        self._ending = False
        self._access_log = access_log

    @property
    def ending(self) -> bool:
        """The shutdown has ended the streams: new ones are refused."""
        return self._ending

    def open(self, kind: StreamKind, route: str, task_name: str) -> OpenStream:
        """Track the current task as a stream until `close`."""
        stream = OpenStream(self, kind, route, task_name)
        self._open.add(stream)
        HTTP_OPEN_STREAMS.labels(kind).inc()
        return stream

    def close(self, stream: OpenStream, status: int) -> None:
        """The stream's handler is done: count it and write its access log line."""
        self.tasks.discard(stream.task)
        self._open.discard(stream)
        HTTP_OPEN_STREAMS.labels(stream.kind).dec()
        HTTP_STREAMS_ENDED.labels(stream.kind, stream.ended_by).inc()
        if self._access_log:
            log.info(
                "http_stream",
                kind=stream.kind,
                route=stream.route,
                status=status,
                duration_ms=int((perf_counter() - stream.started) * 1_000_000) / 1000,
                messages_sent=stream.sent,
                ended_by=stream.ended_by,
            )

    async def end_all(self) -> None:
        """End every open stream at once; past END_TIMEOUT, cut the ones still going."""
        self._ending = True
        streams = list(self._open)
        self.ended_by_shutdown = len(streams)
        endings = [ending for stream in streams if (ending := stream.end()) is not None]
        running = [*endings, *self.tasks.tasks()]
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=END_TIMEOUT)
        for task in late:  # a client that never answers, or never reads: cancelling cuts it
            task.cancel()
        if late:
            log.warning("http_streams_cut", tasks=len(late), after_s=END_TIMEOUT)
            await asyncio.wait(late, timeout=END_TIMEOUT)
