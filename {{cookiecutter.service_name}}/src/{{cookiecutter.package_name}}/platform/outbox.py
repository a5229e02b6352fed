"""The outbox: events written with the data they announce, published once committed.

A feature writes an event with `enqueue`, inside the transaction that writes what the event
announces: a rolled-back transaction leaves no event, a committed one always has its event. The
relay then publishes it to its Redis stream. What travels with an event besides its payload
(the request id; the trace context, with tracing on) goes into its `headers`, never into the
payload the effect handlers read.

Rows are taken in order with `FOR UPDATE NOWAIT`, published with XADD and deleted in the same
transaction. Not `SKIP LOCKED`: with it, a second replica's relay skipped the rows a first one
held and published a later event before them (seen in CI: an SSE client resuming on another
replica got item 4 before items 1-3). With `NOWAIT` it publishes nothing while another relay
holds the oldest rows and tries again at its next poll, so the stream keeps the outbox's order;
it never waits on another replica's lock (one stopped mid-batch cannot hold it up).
A crash after XADD but before COMMIT publishes the event again later: consumers dedupe on
`event_id`, so effects still happen once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from pydantic import Field
from redis.typing import EncodableT, FieldT
from typing_extensions import override

from .db import Connection, PostgresPool
from .dependency import DependencyUnavailableError
from .event_context import EventContext, NoEventContext
from .lifecycle import Component
from .logs import log
from .redis_client import RedisClient
from .request_id import current_request_id
from .settings import Settings, SettingsGroup

REQUEST_ID_HEADER = "request_id"
"""The header that carries the id of the request or RPC that wrote the event: the consumer
puts it on the log lines of the event's effect."""


class OutboxSettings(SettingsGroup):
    """The events stream and how the relay feeds it."""

    events_stream: str = Field(
        default="{{ cookiecutter.service_name }}.events",
        min_length=1,
    )
    outbox_poll_interval: float = Field(default=0.2, gt=0)
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)


INSERT_SQL = (
    "INSERT INTO outbox (event_id, stream, event_type, payload, headers)"
    " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)"
)


async def enqueue(
    connection: Connection,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    stream: str,
    context: EventContext | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write an event to the outbox in the caller's transaction; returns its id.

    `connection` must be in the transaction that writes what the event announces (RuntimeError
    otherwise: an event committed apart from its data could announce a row that never was).
    `payload` is what the stream's effect handlers receive: a JSON object (TypeError for what
    JSON cannot hold, before anything is written). Its headers carry the id of the request or
    RPC being served, if any, and what `context` adds (the trace context: pass the tracing
    component's `events` when tracing is on). `event_id` is the dedupe key of the effects:
    a fresh one unless the caller has its own (an id it can derive again on a retry, say)."""
    if not connection.is_in_transaction():
        raise RuntimeError("outbox.enqueue runs inside the transaction of the data it announces")
    event_id = event_id or uuid.uuid4()
    headers = dict((context or NoEventContext()).outgoing())
    if request_id := current_request_id():
        headers[REQUEST_ID_HEADER] = request_id
    await connection.execute(
        INSERT_SQL, event_id, stream, event_type, json.dumps(dict(payload)), json.dumps(headers)
    )
    return event_id


class OutboxRelay(Component):
    name = "outbox"

    def __init__(
        self, db: PostgresPool, redis: RedisClient, settings: Settings, outbox: OutboxSettings
    ) -> None:
        self._db = db
        self._redis = redis
        self._settings = settings
        self._outbox = outbox
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._publishing = False
        self._in_hand = False
        """Whether the relay holds a batch's rows (taken, not yet committed as published)."""
        self.published = 0

    @override
    async def start(self) -> None:
        self._task = self.spawn(self._run(), "relay")

    async def _run(self) -> None:
        interval = self._outbox.outbox_poll_interval
        while not self._stop.is_set():
            self._publishing = True
            try:
                moved = await self.publish_batch()
            except DependencyUnavailableError:
                moved = 0  # still connecting
            except Exception as error:  # a dependency is down: retry after a pause
                log.warning("outbox_publish_failed", error=str(error) or repr(error))
                moved = 0
                interval = min(interval * 2, self._settings.dependency_max_backoff)
            else:
                interval = self._outbox.outbox_poll_interval
            finally:
                self._publishing = False
            if moved < self._outbox.outbox_batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), interval)

    async def publish_batch(self) -> int:
        """Publish (and delete) up to OUTBOX_BATCH_SIZE events; returns how many (0 as well
        while another replica's relay holds the oldest rows)."""
        try:
            return await self._publish_rows()
        except asyncpg.LockNotAvailableError:
            return 0  # another relay is publishing them: after it, in order, at the next poll
        finally:
            self._in_hand = False

    async def _publish_rows(self) -> int:
        redis = self._redis.client
        async with self._db.transaction() as connection:
            rows = await connection.fetch(
                "SELECT id, event_id, stream, event_type, payload, headers FROM outbox"
                " ORDER BY id LIMIT $1 FOR UPDATE NOWAIT",
                self._outbox.outbox_batch_size,
            )
            if not rows:
                return 0
            self._in_hand = True
            async with redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    fields: dict[FieldT, EncodableT] = {
                        "type": row["event_type"],
                        "event_id": str(row["event_id"]),
                        "payload": _json_text(row["payload"]),
                    }
                    headers = _json_text(row["headers"])
                    if headers != "{}":
                        fields["headers"] = headers
                    pipe.xadd(row["stream"], fields)
                await pipe.execute()
            await connection.execute(
                "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
            )
        self.published += len(rows)
        return len(rows)

    @override
    async def stop_tasks(self) -> None:
        """Finish the batch in hand (events of requests that just drained), then stop. With no
        rows in hand the relay stops at once, even while it waits for a connection: with the
        database unreachable, that wait has no end (seen in CI: the shutdown overran its
        deadline); its events stay in the outbox for the next relay."""
        self._stop.set()
        if self._task is not None:
            if not self._in_hand:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        """The relay only while it publishes a batch: waiting for its next poll is not work, and
        a deadline another component overran must not name it as hung."""
        task = self._task
        return [task] if task is not None and self._publishing and not task.done() else []


def _json_text(value: object) -> str:
    """A jsonb column as JSON text (asyncpg returns jsonb as text unless a codec is set)."""
    return value if isinstance(value, str) else json.dumps(value)
