"""`GET /v1/items/events`: `item.created` as Server-Sent Events, live, resumable on any replica.

The events stream in Redis is the source: an event's SSE `id` is its stream entry id, so a
subscriber that reconnects with `Last-Event-ID` (to this replica or another) resumes right after
that entry, from the stream itself: nothing missed, nothing twice.

One reader per replica (`ItemEvents`) follows the stream with XREAD and hands each entry to every
subscriber's bounded buffer; a subscriber first catches up from its cursor with XRANGE, then sends
what the reader hands it, skipping what it already sent. It subscribes before reading its
cursor, so no entry falls between the two. A subscriber whose buffer fills up (it reads slower
than events come) is disconnected and resumes by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from typing_extensions import override

from ..platform.dependency import DependencyUnavailableError
from ..platform.errors import InvalidArgumentError, UnavailableError
from ..platform.http_server import SETTINGS, HttpRoutes, Routes
from ..platform.http_streams import SHUTTING_DOWN, OpenStream
from ..platform.lifecycle import Component
from ..platform.logs import log
from ..platform.openapi import Doc, parameter
from ..platform.outbox import OutboxSettings
from ..platform.readiness import Readiness
from ..platform.redis_client import RedisClient
from .store import ITEM_CREATED

RETRY_MS = 2000
"""Sent first (`retry:`): how long a client waits before reconnecting after a lost connection."""
SHUTDOWN_RETRY_MS = 500
"""The final `event: shutdown`'s `retry:`: reconnect soon, the load balancer has moved already
(readiness was off for the whole drain delay)."""
PING_INTERVAL_S = 15.0
"""A comment line (`: ping`) this often keeps proxies' idle timeouts from firing and finds
clients that went away."""
SEND_TIMEOUT_S = 10.0
"""A write the client does not take within this is a stalled client: its connection is cut."""
BUFFER_LIMIT = 1000
"""Events held for one subscriber; a subscriber that falls further behind is disconnected."""
PAGE = 200
"""Entries per XRANGE while catching up, and per XREAD of the reader."""
READ_BLOCK_S = 1.0
READ_RETRY_S = 1.0

_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

EntryId = tuple[int, int]
Entry = tuple[str, dict[str, str]]


def entry_key(entry_id: str) -> EntryId:
    """A stream entry id (`<ms>-<seq>`) as a pair that sorts like the stream."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def parse_last_event_id(value: str | None) -> str | None:
    """The `Last-Event-ID` header: absent or empty (a new subscriber), or a stream entry id."""
    if not value:
        return None
    if not _ENTRY_ID.fullmatch(value):
        raise InvalidArgumentError(
            "Last-Event-ID", "must be an event id this stream sent, such as 1700000000000-0"
        )
    return value


class Subscriber:
    """One SSE stream's buffer of live entries, filled by the reader."""

    __slots__ = ("cut", "ending", "entries", "gone", "overflowed", "wake")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False
        self.ending = False
        self.gone = False
        self.cut: Callable[[], None] | None = None
        """Drops the connection: called when the buffer overflows, as the handler may be stuck
        writing to a client that stopped reading."""

    def deliver(self, entry: Entry) -> None:
        if self.overflowed:
            return
        if len(self.entries) >= BUFFER_LIMIT:
            self.overflowed = True  # the client resumes by id, from the stream
            if self.cut is not None:
                self.cut()
        else:
            self.entries.append(entry)
        self.wake.set()

    async def end(self) -> None:
        """The shutdown's way to end the stream (`OpenStream.serving`)."""
        self.ending = True
        self.wake.set()

    def went_away(self) -> None:
        self.gone = True
        self.wake.set()


class ItemEvents(Component):
    """Follows the events stream and hands every entry to the open subscribers."""

    name = "item_events"

    def __init__(
        self, redis_client: RedisClient, outbox: OutboxSettings, readiness: Readiness
    ) -> None:
        self._redis = redis_client
        self._readiness = readiness
        self.stream = outbox.events_stream
        # Below the client's socket timeout, so a blocking read is never cut short.
        self._block_ms = int(min(READ_BLOCK_S, redis_client.socket_timeout / 2) * 1000) or 1
        self._subscribers: set[Subscriber] = set()
        self._following = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def client(self) -> redis.Redis:
        return self._redis.client

    @override
    async def start(self) -> None:
        # Not ready before the reader follows the stream: a subscriber could not start yet.
        await self._readiness.waiting_for(self.name)
        self._task = self.spawn(self._follow(), "reader")

    async def _now_following(self) -> None:
        if not self._following.is_set():
            self._following.set()
            await self._readiness.connected(self.name)

    async def _follow(self) -> None:
        cursor: str | None = None
        # The flag, besides the cancel: Python 3.11's `asyncio.wait_for` (redis-py's socket
        # writes) can swallow a cancellation that lands as its operation completes
        # (python/cpython#86296, fixed in 3.12); the loop then ends at its next turn, within
        # one blocking read.
        while not self._stopping:
            try:
                if cursor is None:  # where the stream ends now: entries after it are live
                    cursor = (await self._info())["last-generated-id"]
                    await self._now_following()
                reply: Any = await self.client.xread(
                    {self.stream: cursor}, count=PAGE, block=self._block_ms
                )
            except DependencyUnavailableError:
                await asyncio.sleep(0.1)  # still connecting
                continue
            except (redis.RedisError, OSError) as error:
                log.warning("item_events_read_failed", error=str(error) or repr(error))
                await asyncio.sleep(READ_RETRY_S)
                continue
            for entry in _entries(reply[0][1] if reply else []):  # [[stream, entries]]
                for subscriber in list(self._subscribers):
                    subscriber.deliver(entry)
                cursor = entry[0]

    async def entries_after(self, cursor: str) -> list[Entry]:
        """Up to PAGE entries after `cursor`, oldest first."""
        reply: Any = await self.client.xrange(self.stream, min=f"({cursor}", count=PAGE)
        return _entries(reply)

    async def subscribe(self, last_event_id: str | None) -> tuple[Subscriber, str, bool]:
        """Register a subscriber, then find where it starts: (subscriber, cursor, reset).
        `reset`: entries after `last_event_id` may be gone (trimmed or deleted), so it starts
        over from the oldest entry."""
        if not self._following.is_set():
            raise UnavailableError("item events are not available yet")
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        try:
            info = await self._info()
        except BaseException:
            self._subscribers.discard(subscriber)
            raise
        if last_event_id is None:
            return subscriber, info["last-generated-id"], False
        if _gone_after(last_event_id, info):
            return subscriber, "0-0", True
        return subscriber, last_event_id, False

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def _info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = await self.client.xinfo_stream(self.stream)
        except redis.ResponseError as error:
            if "no such key" not in str(error):
                raise
            # No stream yet: everything it will hold is new.
            return {"last-generated-id": "0-0", "length": 0, "entries-added": 0}
        return info

    @override
    async def stop_tasks(self) -> None:
        # Nothing to finish: the reader holds no work, only a cursor in a shared stream.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        return [self._task] if self._task is not None and not self._task.done() else []


def _entries(reply: Any) -> list[Entry]:
    return [(str(entry_id), dict(fields)) for entry_id, fields in reply]


def _gone_after(last_event_id: str, info: dict[str, Any]) -> bool:
    """Whether an entry after `last_event_id` may have been removed from the stream: trimmed
    (everything before the first entry kept; all of it when the stream is empty) or deleted
    (up to max-deleted-entry-id). Cautious: a false alarm only costs the client a reset."""
    if int(info.get("entries-added", 0)) <= int(info.get("length", 0)):
        return False  # nothing was ever removed
    seen = entry_key(last_event_id)
    first = info.get("first-entry")
    trimmed_before = first[0] if first else info["last-generated-id"]
    deleted_up_to = info.get("max-deleted-entry-id") or "0-0"
    return seen < entry_key(trimmed_before) or seen < entry_key(deleted_up_to)


def event_data(fields: dict[str, str]) -> str | None:
    """The SSE `data:` of an `item.created` entry; None for other entries."""
    if fields.get("type") != ITEM_CREATED:
        return None
    try:
        payload = json.loads(fields["payload"])
        item = {"id": payload["item_id"], "name": payload["name"], "quantity": payload["quantity"]}
    except (KeyError, TypeError, ValueError):
        log.warning("item_event_malformed", fields=fields)
        return None
    return json.dumps({"event_id": fields.get("event_id"), "item": item}, separators=(",", ":"))


ITEM_EVENTS = web.AppKey("item_events", ItemEvents)


async def item_events(request: web.Request, stream: OpenStream) -> web.StreamResponse:
    """`event: item.created`, `id: <stream entry id>`, `data: {"event_id", "item": {...}}`."""
    events = request.app[ITEM_EVENTS]
    last_event_id = parse_last_event_id(request.headers.get("Last-Event-ID"))
    async with asyncio.timeout(request.app[SETTINGS].request_timeout):
        subscriber, cursor, reset = await events.subscribe(last_event_id)
    try:
        response = EventSourceResponse(
            sep="\n", ping_interval=PING_INTERVAL_S, send_timeout=SEND_TIMEOUT_S
        )
        await response.prepare(request)
        stream.serving(response, subscriber.end)
        if request.transport is not None:
            subscriber.cut = request.transport.abort
        gone = asyncio.ensure_future(response.wait())  # the pings stop when the client is gone
        gone.add_done_callback(lambda _: subscriber.went_away())
        try:
            await _send_events(response, stream, events, subscriber, cursor, reset, last_event_id)
        except ConnectionResetError:
            if subscriber.overflowed:  # else the client went away
                stream.ended_by = "slow"
        except TimeoutError:
            stream.ended_by = "slow"  # aiohttp-sse cut the connection: a write stalled
        finally:
            response.stop_streaming()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
        return response
    finally:
        events.unsubscribe(subscriber)


async def _send_events(
    response: EventSourceResponse,
    stream: OpenStream,
    events: ItemEvents,
    subscriber: Subscriber,
    cursor: str,
    reset: bool,
    last_event_id: str | None,
) -> None:
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    if reset:
        gone = {"reason": "events after Last-Event-ID are gone", "last_event_id": last_event_id}
        await response.send(json.dumps(gone), event="reset")
    sent = entry_key(cursor)
    # Catch up from the stream (everything up to now), then go live from the buffer.
    while not subscriber.ending:
        page = await events.entries_after(cursor)
        for entry_id, fields in page:
            if (data := event_data(fields)) is not None:
                await response.send(data, id=entry_id, event=ITEM_CREATED)
                stream.message_sent()
            cursor, sent = entry_id, entry_key(entry_id)
        if len(page) < PAGE:
            break
    while True:
        if subscriber.ending:
            ending = json.dumps({"reason": SHUTTING_DOWN})
            await response.send(ending, event="shutdown", retry=SHUTDOWN_RETRY_MS)
            return
        if subscriber.gone:
            return
        if subscriber.overflowed:
            stream.ended_by = "slow"
            return
        while subscriber.entries and not subscriber.ending:
            entry_id, fields = subscriber.entries.popleft()
            if entry_key(entry_id) <= sent:
                continue  # already sent while catching up
            if (data := event_data(fields)) is not None:
                await response.send(data, id=entry_id, event=ITEM_CREATED)
                stream.message_sent()
            sent = entry_key(entry_id)
        if not subscriber.entries and not subscriber.ending:
            subscriber.wake.clear()
            await subscriber.wake.wait()


ITEM_EVENTS_DOC = Doc(
    "Server-Sent Events of `item.created`, live; resumable on any replica by `Last-Event-ID`.",
    {400: ("A malformed `Last-Event-ID`.", None)},
    parameters=(
        parameter(
            "Last-Event-ID", "header", {"type": "string"}, "Resume right after this entry id."
        ),
    ),
    streams={200: ("Events: `item.created`, `reset`, `shutdown`.", "text/event-stream")},
)


def item_event_routes(events: ItemEvents) -> HttpRoutes:
    def add_routes(routes: Routes) -> None:
        routes.app[ITEM_EVENTS] = events
        routes.stream("/v1/items/events", "sse", item_events, doc=ITEM_EVENTS_DOC)

    return add_routes
