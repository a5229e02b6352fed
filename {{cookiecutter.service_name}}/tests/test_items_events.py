"""`GET /v1/items/events` (Server-Sent Events) against the real service: live events from the
moment of connecting, resume by `Last-Event-ID` on another replica (nothing missed, nothing
twice), the documented answers to a malformed or expired id, and the final `event: shutdown`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient, TestServer

from {{ cookiecutter.package_name }}.items import events as items_events
from {{ cookiecutter.package_name }}.items.events import (
    BUFFER_LIMIT,
    SEND_TIMEOUT_S,
    ItemEvents,
    Subscriber,
    _gone_after,
    item_event_routes,
    parse_last_event_id,
)
from {{ cookiecutter.package_name }}.platform.errors import InvalidArgumentError
from {{ cookiecutter.package_name }}.platform.http_server import create_app
from {{ cookiecutter.package_name }}.platform.inflight import InFlight

from .items_support import started_backend
from .metrics_support import scrape
from .service import Service, http_get, isolated_names, running_service
from .support import wait_until
from .test_shutdown_streams import END_BOUND_S, close_frame, echo_once, listeners_closed_at

FAST = {"DRAIN_DELAY": "0.5", "SHUTDOWN_TIMEOUT": "10", "OUTBOX_POLL_INTERVAL": "0.05"}

Block = dict[str, str]
"""One SSE block (the lines up to a blank line) by field name; a comment line is ":"."""


class SseClient:
    """A subscriber reading the stream block by block, with a time bound on every read."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.received_at: list[float] = []

    async def block(self, seconds: float = 5.0) -> Block | None:
        """The next block; None at the end of the stream."""
        block: Block = {}
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), seconds)
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if block:
                    self.received_at.append(time.time())
                    return block
                continue
            name, _, value = text.partition(":")
            block[name or ":"] = value.removeprefix(" ")

    async def event(self, seconds: float = 5.0) -> Block | None:
        """The next block that is not a comment (heartbeat)."""
        while (block := await self.block(seconds)) is not None:
            if set(block) != {":"}:
                return block
        return None

    async def items(self, count: int, seconds: float = 5.0) -> list[tuple[str, int]]:
        """The next `count` item.created events as (id, item id)."""
        found = []
        for _ in range(count):
            event = await self.event(seconds)
            assert event is not None
            assert event.get("event") == "item.created", event
            found.append((event["id"], json.loads(event["data"])["item"]["id"]))
        return found


async def subscribe(
    session: aiohttp.ClientSession, service: Service, last_event_id: str | None = None
) -> SseClient:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await session.get(f"{service.url}/v1/items/events", headers=headers)
    assert response.status == 200, (await response.text(), service.output())
    assert response.headers["Content-Type"].startswith("text/event-stream")
    client = SseClient(response)
    assert await client.block() == {"retry": "2000"}, "the stream begins with retry:"
    return client


async def create_item(session: aiohttp.ClientSession, service: Service, name: str) -> int:
    async with session.post(f"{service.url}/v1/items", json={"name": name, "quantity": 1}) as r:
        assert r.status == 201, await r.text()
        return int((await r.json())["id"])


async def stream_ids(service: Service) -> list[str]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    try:
        entries: Any = await client.xrange(service.env["EVENTS_STREAM"])
    finally:
        await client.aclose()
    return [str(entry_id) for entry_id, _ in entries]


async def published(service: Service, count: int) -> list[str]:
    """The stream's entry ids once it holds `count` entries (the relay polls every 50 ms)."""
    for _ in range(200):
        if len(ids := await stream_ids(service)) >= count:
            return ids
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} events published within 10 s")


async def test_live_events_then_a_final_shutdown_event_with_websockets_open() -> None:
    with running_service(**{**FAST, "DRAIN_DELAY": "1.5"}) as service:
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(f"{service.url}/v1/echo/ws") for _ in range(2)]
            await create_item(session, service, "before")
            await published(service, 1)
            subscribers = [await subscribe(session, service) for _ in range(3)]
            created = [await create_item(session, service, f"live {i}") for i in range(3)]
            for subscriber in subscribers:
                got = await subscriber.items(3)
                assert [item for _, item in got] == created, "nothing old, nothing missed"
                assert [entry_id for entry_id, _ in got] == (await stream_ids(service))[1:]
            samples = await asyncio.to_thread(scrape, service)
            assert samples.get("http_server_open_streams", kind="sse") == 3

            signalled = service.signal(signal.SIGTERM)
            service.wait_for_event("shutdown_requested")
            status, _, _ = await asyncio.to_thread(http_get, f"{service.url}/readyz")
            assert status == 503
            # Still flowing during the drain delay, and a new subscriber is served.
            late = await subscribe(session, service)
            subscribers.append(late)
            during = await create_item(session, service, "during")
            for subscriber in subscribers:
                assert [item for _, item in await subscriber.items(1)] == [during]
            for ws in sockets:
                assert await echo_once(ws, "during") == "during"
            assert time.monotonic() - signalled < 1.5, "checks must run inside the drain delay"

            finals, closes = await asyncio.gather(
                asyncio.gather(*(subscriber.event(10) for subscriber in subscribers)),
                asyncio.gather(*(close_frame(ws) for ws in sockets)),
            )
            ends = [await subscriber.block() for subscriber in subscribers]
        assert await asyncio.to_thread(service.wait_exit, 15) == 0, service.output()
        exited = time.monotonic() - signalled

    closed_at = listeners_closed_at(service)
    for final, subscriber in zip(finals, subscribers, strict=True):
        assert final is not None
        assert final["event"] == "shutdown"
        assert json.loads(final["data"]) == {"reason": "server shutting down"}
        assert final["retry"] == "500"
        assert "id" not in final, "the final event must not move the client's Last-Event-ID"
        assert subscriber.received_at[-1] - closed_at < END_BOUND_S, service.output()
    assert ends == [None] * 4, "the response ends after the final event"
    for message, received in closes:
        assert message.data == aiohttp.WSCloseCode.SERVICE_RESTART
        assert received - closed_at < END_BOUND_S, service.output()
    assert exited < 1.5 + 2.5, f"exited {exited:.2f}s after SIGTERM"
    [report] = service.events("shutdown_complete")
    assert report["drained"]["http"]["streams_ended"] == 4 + 2
    lines = [line for line in service.events("http_stream") if line["kind"] == "sse"]
    assert sorted(line["messages_sent"] for line in lines) == [1, 4, 4, 4]
    assert {line["ended_by"] for line in lines} == {"shutdown"}


async def test_resume_on_another_replica_misses_nothing_and_sees_nothing_twice() -> None:
    shared = isolated_names()  # both replicas: one schema, one events stream
    with running_service(**FAST, **shared) as first, running_service(**FAST, **shared) as second:
        async with aiohttp.ClientSession() as session:
            subscriber = await subscribe(session, first)
            created = [await create_item(session, first, f"a{i}") for i in range(4)]
            seen = await subscriber.items(2)
            subscriber.response.close()  # gone after the second event
            created += [await create_item(session, first, f"b{i}") for i in range(3)]
            await published(first, len(created))

            resumed = await subscribe(session, second, last_event_id=seen[-1][0])
            rest = await resumed.items(5)
            live = await create_item(session, second, "after")
            rest += await resumed.items(1)
            with pytest.raises(TimeoutError):  # and nothing more: no entry comes twice
                await resumed.event(0.5)
    items = [item for _, item in seen + rest]
    assert items == [*created, live], "nothing missed, nothing twice, in order"
    ids = [entry_id for entry_id, _ in seen + rest]
    assert len(set(ids)) == len(ids)


async def test_malformed_last_event_id_is_a_400() -> None:
    with running_service(**FAST) as service:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{service.url}/v1/items/events", headers={"Last-Event-ID": "not-an-id"}
            ) as response,
        ):
            body = await response.json()
    assert response.status == 400
    assert body["status"] == 400
    assert body["field"] == "Last-Event-ID"


async def test_expired_last_event_id_restarts_from_the_oldest_entry_with_a_reset() -> None:
    with running_service(**FAST) as service:
        async with aiohttp.ClientSession() as session:
            created = [await create_item(session, service, f"old{i}") for i in range(3)]
            ids = await published(service, 3)
            client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
            await client.xtrim(service.env["EVENTS_STREAM"], maxlen=1, approximate=False)
            await client.aclose()
            subscriber = await subscribe(session, service, last_event_id=ids[0])
            reset = await subscriber.event()
            assert reset is not None
            assert reset["event"] == "reset", reset
            assert "id" not in reset
            assert json.loads(reset["data"])["last_event_id"] == ids[0]
            assert await subscriber.items(1) == [(ids[2], created[2])]
            # An id the stream still holds everything after resumes without a reset.
            resumed = await subscribe(session, service, last_event_id=ids[2])
            newer = await create_item(session, service, "new")
            assert [item for _, item in await resumed.items(1)] == [newer]


async def test_the_stream_begins_with_retry_then_pings_with_a_comment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-process, `PING_INTERVAL_S` at 0.1 s (15 s in service): `retry:` first, then a `: ping`
    comment whenever no event was sent for that long, which proxies count as traffic and
    EventSource ignores."""
    monkeypatch.setattr(items_events, "PING_INTERVAL_S", 0.1)
    async with started_backend() as backend:
        events = ItemEvents(backend.redis, backend.settings, backend.readiness)
        await events.start()
        try:
            await wait_until(lambda: backend.readiness.ready, "the reader follows the stream")
            routes = [item_event_routes(events)]
            app = create_app(backend.settings, backend.readiness, InFlight(), routes)
            async with TestClient(TestServer(app)) as client:
                response = await client.get("/v1/items/events")
                assert response.status == 200
                subscriber = SseClient(response)
                assert await subscriber.block() == {"retry": "2000"}
                assert await subscriber.block(2) == {":": "ping"}
                assert await subscriber.block(2) == {":": "ping"}
                response.close()
        finally:
            await events.stop_tasks()


async def test_the_reader_stops_even_when_its_cancellation_is_swallowed() -> None:
    """Python 3.11's `asyncio.wait_for` inside redis-py can swallow a cancellation (seen in CI:
    the reader outlived `stop_tasks` and the shutdown ran to its deadline). Here the real
    client's `xread` swallows it on purpose: `stop_tasks` must still end within a read."""
    async with started_backend() as backend:
        events = ItemEvents(backend.redis, backend.settings, backend.readiness)
        client = backend.redis.client
        real_xread = client.xread

        async def swallowing_xread(*args: Any, **kwargs: Any) -> Any:
            try:
                return await real_xread(*args, **kwargs)
            except asyncio.CancelledError:
                return []  # what wait_for's race does: the caller never sees the cancellation

        client.xread = swallowing_xread  # type: ignore[method-assign]
        await events.start()
        await wait_until(lambda: backend.readiness.ready, "the reader follows the stream")
        await asyncio.sleep(0.2)  # inside a blocking read
        stopping = asyncio.create_task(events.stop_tasks())
        done, _ = await asyncio.wait({stopping}, timeout=3)  # (wait_for would wait on forever)
        client.xread = real_xread  # type: ignore[method-assign]
        if not done:  # a reader that ignored its stop: cancel it for real, then fail
            stopping.cancel()
            await asyncio.wait({stopping}, timeout=5)
        assert done, "the reader ignored its stop"
        assert events.unfinished() == []


def stalled_subscriber(port: int) -> socket.socket:
    """An SSE client that reads the response's headers, then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /v1/items/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n") and len(head) < 65536:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def read_to_the_end(sock: socket.socket) -> bytes:
    """What the server sent before it dropped the connection (bounded)."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while len(data) < 64 * 1024 * 1024 and (chunk := sock.recv(1 << 16)):
            data += chunk
    return data


def event_ids(chunked: bytes) -> list[str]:
    """The ids of the complete events in a chunked response body (cut anywhere)."""
    body, rest = b"", chunked
    while b"\r\n" in rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(rest) < size:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    complete = body.decode(errors="replace").split("\n\n")[:-1]  # the last may be cut
    return [line[4:] for block in complete for line in block.split("\n") if line[:4] == "id: "]


async def test_a_subscriber_that_stops_reading_is_cut_and_resumes_by_id() -> None:
    with running_service(**FAST) as service:
        async with aiohttp.ClientSession() as session:
            item = await create_item(session, service, "big")  # the consumer finds it
            await published(service, 1)
            stalled = await asyncio.to_thread(stalled_subscriber, service.http_port)
            try:
                # Far more than the socket buffers and the subscriber's buffer hold.
                client = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
                payload = json.dumps({"item_id": item, "name": "x" * 2000, "quantity": 1})
                async with client.pipeline(transaction=False) as pipe:
                    for n in range(BUFFER_LIMIT * 4):
                        fields = {"type": "item.created", "event_id": f"e{n}", "payload": payload}
                        pipe.xadd(service.env["EVENTS_STREAM"], fields)  # type: ignore[arg-type]
                    await pipe.execute()
                await client.aclose()
                for _ in range(200):
                    if [e for e in service.events("http_stream") if e["ended_by"] == "slow"]:
                        break
                    await asyncio.sleep(0.05)
                received = event_ids(await asyncio.to_thread(read_to_the_end, stalled))
            finally:
                stalled.close()
            [cut] = [e for e in service.events("http_stream") if e["kind"] == "sse"]
            assert cut["ended_by"] == "slow", service.output()
            # Cut by the buffer's bound, not after the stalled write's SEND_TIMEOUT_S.
            assert cut["duration_ms"] < SEND_TIMEOUT_S * 1000 / 2, cut
            assert 0 < len(received) < BUFFER_LIMIT * 4
            ids = await stream_ids(service)
            assert received == ids[1 : 1 + len(received)], "in order, none skipped"
            resumed = await subscribe(session, service, last_event_id=received[-1])
            assert await resumed.items(1) == [(ids[1 + len(received)], item)]


def test_a_subscriber_that_falls_behind_is_disconnected_not_buffered_without_bound() -> None:
    subscriber = Subscriber()
    for n in range(BUFFER_LIMIT + 5):
        subscriber.deliver((f"1-{n}", {}))
    assert subscriber.overflowed
    assert len(subscriber.entries) == BUFFER_LIMIT
    assert [entry_id for entry_id, _ in subscriber.entries][-1] == f"1-{BUFFER_LIMIT - 1}"


DELETED_6 = {"max-deleted-entry-id": "6-0"}


@pytest.mark.parametrize(
    ("last_event_id", "info", "gone"),
    [
        # Nothing ever removed: any id resumes.
        ("5-0", {"length": 3, "entries-added": 3, "first-entry": ("7-0", {})}, False),
        # Trimmed to 7-0 and after: an id before it may have missed entries.
        ("5-0", {"length": 1, "entries-added": 3, "first-entry": ("7-0", {})}, True),
        ("7-0", {"length": 1, "entries-added": 3, "first-entry": ("7-0", {})}, False),
        # 5-0, 6-0, 7-0, then 6-0 deleted (XDEL): an id before it may have missed it.
        ("5-0", {"length": 2, "entries-added": 3, "first-entry": ("5-0", {}), **DELETED_6}, True),
        ("6-0", {"length": 2, "entries-added": 3, "first-entry": ("5-0", {}), **DELETED_6}, False),
        # Trimmed empty: everything up to the last id is gone.
        ("5-0", {"length": 0, "entries-added": 3, "last-generated-id": "8-0"}, True),
        ("8-0", {"length": 0, "entries-added": 3, "last-generated-id": "8-0"}, False),
    ],
)
def test_an_id_is_expired_when_entries_after_it_may_be_gone(
    last_event_id: str, info: dict[str, Any], gone: bool
) -> None:
    info = {"last-generated-id": "9-0", "first-entry": None, **info}
    assert _gone_after(last_event_id, info) is gone


@pytest.mark.parametrize("value", ["abc", "1", "1-", "-1", "1-2-3", "1.0-0", " 1-0", "1-0\n"])
def test_malformed_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_last_event_id(value)
