"""The example domain: items in Postgres, their events through the outbox, a Redis read cache.

Create = one transaction writing the item *and* its `item.created` event (`outbox.enqueue`; the
relay publishes it), so an event exists exactly for the committed rows. Read = cache-aside
through Redis.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as redis
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from ..platform import outbox
from ..platform.db import Connection, PostgresPool
from ..platform.errors import InvalidArgumentError, NotFoundError
from ..platform.event_context import EventContext
from ..platform.logs import log
from ..platform.outbox import OutboxSettings
from ..platform.redis_client import RedisClient
from .settings import ItemsSettings

ITEM_CREATED = "item.created"
MAX_IDEMPOTENCY_KEY = 200


class NewItem(BaseModel):
    """What a client sends to create an item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(min_length=1, max_length=200)
    quantity: StrictInt = Field(ge=0, le=1_000_000_000)

    @field_validator("name")
    @classmethod
    def _storable(cls, name: str) -> str:
        if "\x00" in name:  # PostgreSQL text cannot hold it: refused here, not by the INSERT
            raise ValueError("must not contain NUL (U+0000)")
        return name


class Item(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    quantity: int
    created_at: datetime


class ItemNotFoundError(NotFoundError):
    """No item with that id: HTTP 404 / gRPC NOT_FOUND."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"no item with id {item_id}", "id")


def parse_new_item(data: object) -> NewItem:
    """Validate client input; InvalidArgumentError names every bad field."""
    try:
        return NewItem.model_validate(data)
    except ValidationError as error:
        problems = {
            ".".join(str(part) for part in item["loc"]) or "body": item["msg"]
            for item in error.errors()
        }
        detail = "; ".join(f"{field}: {problem}" for field, problem in problems.items())
        raise InvalidArgumentError(", ".join(problems), detail, problems) from None


def parse_idempotency_key(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidArgumentError(
            "idempotency_key", f"must be printable and at most {MAX_IDEMPOTENCY_KEY} characters"
        )
    return key


def parse_item_id(raw: object) -> int:
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise InvalidArgumentError("id", "must be a positive integer")
    return raw


def _item(row: asyncpg.Record) -> Item:
    return Item(
        id=row["id"], name=row["name"], quantity=row["quantity"], created_at=row["created_at"]
    )


class ItemStore:
    """Items over Postgres and Redis. Callers bound each call with their remaining time
    (`asyncio.timeout`): the request's deadline, not a constant, limits the database work."""

    def __init__(
        self,
        db: PostgresPool,
        cache: RedisClient,
        outbox_settings: OutboxSettings,
        cache_settings: ItemsSettings,
        events: EventContext | None = None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._events = events
        self._stream = outbox_settings.events_stream
        self._ttl = cache_settings.ttl_seconds
        self._prefix = cache_settings.prefix

    async def create(self, new: NewItem, idempotency_key: str | None) -> tuple[Item, bool]:
        """Insert the item and its event atomically. Returns (item, created); a repeated
        idempotency key returns the original item and `created=False`."""
        async with self._db.transaction() as connection:
            row = await connection.fetchrow(
                "INSERT INTO items (name, quantity, idempotency_key) VALUES ($1, $2, $3)"
                " ON CONFLICT (idempotency_key) DO NOTHING"
                " RETURNING id, name, quantity, created_at",
                new.name,
                new.quantity,
                idempotency_key,
            )
            if row is None:  # the key was used before: answer with the original item
                original = await connection.fetchrow(
                    "SELECT id, name, quantity, created_at FROM items WHERE idempotency_key = $1",
                    idempotency_key,
                )
                assert original is not None
                return _item(original), False
            item = _item(row)
            payload = {"item_id": item.id, "name": item.name, "quantity": item.quantity}
            await outbox.enqueue(
                connection, ITEM_CREATED, payload, stream=self._stream, context=self._events
            )
        return item, True

    async def get(self, item_id: int) -> Item:
        """Cache-aside: Redis first, Postgres on a miss (then cached). A cache outage only
        costs latency, never the answer."""
        key = f"{self._prefix}item:{item_id}"
        cached = await self._cache_get(key)
        if cached is not None:
            return Item.model_validate_json(cached)
        async with self._db.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT id, name, quantity, created_at FROM items WHERE id = $1", item_id
            )
        if row is None:
            raise ItemNotFoundError(item_id)
        item = _item(row)
        await self._cache_set(key, item.model_dump_json())
        return item

    async def _cache_get(self, key: str) -> str | None:
        try:
            value = await self._cache.client.get(key)
        except (redis.RedisError, OSError) as error:
            log.warning("cache_unavailable", operation="get", error=str(error))
            return None
        return value if isinstance(value, str) else None

    async def _cache_set(self, key: str, value: str) -> None:
        try:
            await self._cache.client.set(key, value, ex=self._ttl)
        except (redis.RedisError, OSError) as error:
            log.warning("cache_unavailable", operation="set", error=str(error))


def _item_id_of(payload: dict[str, Any]) -> int:
    item_id = payload.get("item_id")
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise ValueError(f"item.created without an integer item_id: {payload!r}")
    return item_id


async def on_item_created(connection: Connection, payload: dict[str, Any]) -> None:
    """The consumer's effect for `item.created`: mark the item processed (same transaction as
    the processed_events row, so it happens exactly once)."""
    item_id = _item_id_of(payload)
    updated = await connection.execute(
        "UPDATE items SET processed_at = now() WHERE id = $1 AND processed_at IS NULL", item_id
    )
    if updated == "UPDATE 0" and not await connection.fetchval(
        "SELECT true FROM items WHERE id = $1", item_id
    ):
        raise ValueError(f"item.created for unknown item {item_id}")


MARK_PROCESSED_SQL = """
WITH wanted AS (SELECT DISTINCT unnest($1::bigint[]) AS id),
marked AS (
    UPDATE items SET processed_at = now()
    WHERE id = ANY($1::bigint[]) AND processed_at IS NULL
    RETURNING id
)
SELECT count(*) FROM wanted WHERE NOT EXISTS (SELECT 1 FROM items WHERE items.id = wanted.id)
"""
"""Marks the items processed; counts the ids that name no item. One round trip for a group."""


async def on_items_created(connection: Connection, payloads: list[dict[str, Any]]) -> None:
    """`on_item_created` for all the new `item.created` events of a consumer group in one
    statement instead of one per event (the consumer's GroupEffectHandler). Any bad event fails
    the call, and the consumer then tells it apart with `on_item_created`."""
    # Sorted: concurrent groups lock the rows they share in the same order.
    item_ids = sorted({_item_id_of(payload) for payload in payloads})
    if unknown := await connection.fetchval(MARK_PROCESSED_SQL, item_ids):
        raise ValueError(f"item.created for {unknown} unknown item(s)")
