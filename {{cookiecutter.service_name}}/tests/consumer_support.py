"""Shared by the consumer tests: publishing events, reading the outcome, a throwaway Redis.

Everything talks to 127.0.0.1 only; every wait is bounded in time and in count.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT, FieldT

from {{ cookiecutter.package_name }}.items.store import ITEM_CREATED
from {{ cookiecutter.package_name }}.platform.db import PostgresSettings
from {{ cookiecutter.package_name }}.platform.redis_client import RedisSettings

from .service import Service, drop_isolated, isolated_names
from .support import wait_until

CONSUMER_ENV = {
    "CONSUMER_BLOCK_MS": "200",
    "CONSUMER_CLAIM_IDLE_MS": "300",
    "CONSUMER_MAX_DELIVERIES": "3",
    "CONSUMER_BATCH_SIZE": "64",
    "CONSUMER_CONCURRENCY": "8",
    "DRAIN_DELAY": "0.2",
    "SHUTDOWN_TIMEOUT": "10",
}
"""Short timings so recovery happens within seconds; the rest are the service's defaults."""

DEFAULT_DATABASE_URL: str = PostgresSettings.model_fields["database_url"].default
DEFAULT_REDIS_URL: str = RedisSettings.model_fields["redis_url"].default


def consumer_env(**overrides: str) -> dict[str, str]:
    """One test's environment: isolated names, short timings, a stable consumer (pod) name."""
    return {
        **isolated_names(),
        **CONSUMER_ENV,
        "CONSUMER_NAME": f"pod-{uuid.uuid4().hex[:8]}",
        **overrides,
    }


@contextmanager
def migrated(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Apply the migrations to the test's schema; drop its schema and streams afterwards."""
    try:
        result = Service(**env).run_command("migrate")
        assert result.returncode == 0, result.stdout + result.stderr
        yield env
    finally:
        drop_isolated(env)


@dataclass
class Published:
    """What a test published: event_id -> stream message id, and the item ids."""

    message_ids: dict[str, str]
    item_ids: list[int]


class Backends:
    """The test's view of Postgres (its schema) and Redis (its streams and group)."""

    def __init__(self, env: dict[str, str], db: asyncpg.Connection, client: redis.Redis) -> None:
        self.env = env
        self.db = db
        self.redis = client
        self.stream = env["EVENTS_STREAM"]
        self.dead = env["DEAD_LETTER_STREAM"]
        self.group = env["CONSUMER_GROUP"]

    async def insert_items(self, count: int) -> list[int]:
        rows = await self.db.fetch(
            "INSERT INTO items (name, quantity) SELECT 'item-' || g, g"
            " FROM generate_series(1, $1) AS g RETURNING id",
            count,
        )
        return sorted(int(row["id"]) for row in rows)

    async def publish_items(self, count: int) -> Published:
        """`count` new items and their item.created events, XADDed in one pipeline."""
        item_ids = await self.insert_items(count)
        events = [
            {"type": ITEM_CREATED, "event_id": str(uuid.uuid4()), "payload": _item_payload(item)}
            for item in item_ids
        ]
        message_ids = await self.xadd_all(events)
        event_ids = (event["event_id"] for event in events)
        return Published(dict(zip(event_ids, message_ids, strict=True)), item_ids)

    async def insert_items_with_outbox(self, count: int) -> set[str]:
        """`count` new items and their outbox rows (for the service's relay); the event ids."""
        await self.insert_items(count)
        rows = await self.db.fetch(
            "INSERT INTO outbox (event_id, stream, event_type, payload)"
            " SELECT gen_random_uuid(), $1, $2, jsonb_build_object("
            "'item_id', id, 'name', name, 'quantity', quantity)"
            " FROM items ORDER BY id RETURNING event_id",
            self.stream,
            ITEM_CREATED,
        )
        return {str(row["event_id"]) for row in rows}

    async def stream_events(self) -> dict[str, str]:
        """The events stream as message id -> event_id (one XRANGE per 10,000 entries)."""
        events: dict[str, str] = {}
        start = "-"
        for _ in range(100):
            entries = await self.redis.xrange(self.stream, min=start, count=10_000) or []
            for message_id, fields in entries:
                events[str(message_id)] = str((fields or {}).get("event_id", ""))
            if len(entries) < 10_000:
                return events
            start = f"({entries[-1][0]!s}"
        raise AssertionError("stream too long for a test")

    async def outbox_rows(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM outbox"))

    async def xadd_all(self, events: list[dict[str, str]]) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                fields: dict[FieldT, EncodableT] = {key: value for key, value in event.items()}
                pipe.xadd(self.stream, fields)
            return [str(message_id) for message_id in await pipe.execute()]

    async def processed(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM processed_events"))

    async def processed_ids(self) -> dict[str, str]:
        """event_id -> the stream message id that delivered it, from processed_events."""
        rows = await self.db.fetch("SELECT event_id, message_id FROM processed_events")
        return {str(row["event_id"]): str(row["message_id"]) for row in rows}

    async def unprocessed_items(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM items WHERE processed_at IS NULL"))

    async def pending(self) -> int:
        """XPENDING summary count of the group (0 when the group does not exist yet)."""
        try:
            summary = await self.redis.xpending(self.stream, self.group)
        except redis.ResponseError as error:
            if "NOGROUP" in str(error):
                return 0
            raise
        return int(summary["pending"])

    async def pending_by_consumer(self) -> dict[str, int]:
        summary = await self.redis.xpending(self.stream, self.group)
        return {str(c["name"]): int(c["pending"]) for c in summary["consumers"] or []}

    async def dead_letters(self) -> list[tuple[str, dict[str, str]]]:
        entries = await self.redis.xrange(self.dead) or []
        return [
            (str(message_id), {str(k): str(v) for k, v in (fields or {}).items()})
            for message_id, fields in entries
        ]

    async def acked_without_effect(self) -> list[str]:
        """Delivered messages no longer pending (acked) whose event has no committed effect:
        must be none, since the consumer acks only after its transaction committed."""
        groups = await self.redis.xinfo_groups(self.stream)
        (group,) = [g for g in groups if g["name"] == self.group]
        last_delivered = stream_id(str(group["last-delivered-id"]))
        entries = await self.redis.xpending_range(
            self.stream, self.group, min="-", max="+", count=100_000
        )
        pending = {str(entry["message_id"]) for entry in entries}
        committed = set(await self.processed_ids())
        acked = [
            message_id
            for message_id, event_id in (await self.stream_events()).items()
            if stream_id(message_id) <= last_delivered
            and message_id not in pending
            and event_id not in committed
        ]
        return sorted(acked, key=stream_id)

    async def wait_until(
        self,
        condition: Callable[[], Awaitable[bool]],
        what: str,
        within: float,
        service: Service | None = None,
    ) -> None:
        """`support.wait_until`, kept as a method for the consumer tests."""
        await wait_until(condition, what, within, service)

    async def dead_lettered_and_settled(self, count: int) -> bool:
        """`count` messages dead-lettered, nothing left pending."""
        return len(await self.dead_letters()) == count and await self.pending() == 0

    async def done(self, total: int) -> bool:
        """Every event's effect committed once, every item processed, nothing pending."""
        return (
            await self.processed() == total
            and await self.unprocessed_items() == 0
            and await self.pending() == 0
        )


async def assert_exactly_once(b: Backends, event_ids: set[str]) -> None:
    """The end state: every event's effect exactly once, nothing left over anywhere."""
    assert await b.processed() == len(event_ids)
    assert set(await b.processed_ids()) == event_ids
    assert await b.unprocessed_items() == 0
    assert await b.pending() == 0
    assert await b.dead_letters() == []
    assert await b.acked_without_effect() == []


@asynccontextmanager
async def backends(env: dict[str, str]) -> AsyncIterator[Backends]:
    db = await asyncpg.connect(
        env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        server_settings={"search_path": env["DATABASE_SCHEMA"]},
    )
    client = redis.Redis.from_url(
        env.get("REDIS_URL", DEFAULT_REDIS_URL),
        decode_responses=True,
        socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),  # across its restart
    )
    try:
        yield Backends(env, db, client)
    finally:
        await client.aclose()
        await db.close()


def stream_id(message_id: str) -> tuple[int, int]:
    """A stream id ("ms-seq") in a form that compares in stream order."""
    ms, seq = message_id.split("-")
    return int(ms), int(seq)


def _item_payload(item_id: int) -> str:
    return json.dumps({"item_id": item_id, "name": f"item-{item_id}", "quantity": item_id})


async def stop_service(service: Service, signum: int, wait: float = 20.0) -> int:
    """Signal the service and wait (off the event loop) for its exit code."""
    service.signal(signum)
    return await asyncio.to_thread(service.wait_exit, wait)


@contextmanager
def started(env: dict[str, str]) -> Iterator[Service]:
    """One run of the service (a pod's life); SIGKILLed by its PID if the test leaves it."""
    service = Service(**env)
    service.start()
    try:
        yield service
    finally:
        service.kill()
