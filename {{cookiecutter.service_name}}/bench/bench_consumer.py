"""Consumer throughput: the service's `StreamConsumer` against a raw XREADGROUP/XACK loop.

`python -m bench.bench_consumer {service|raw} {noop|real} COUNT` (configured by the service's
environment variables; the schema must be migrated) fills a fresh stream with COUNT `item.created`
events (and their items), then times how long the consumer takes to handle and acknowledge all
of them, and prints `{"rate": messages per second}` as JSON. Filling is not timed.

- service: the service's consumer class with its handler map, in-flight tracking, dedupe rows
  (`processed_events`), group transactions (savepoints only once an effect has failed) and one
  XACK per batch; `noop` registers a handler that does nothing, `real` the service's
  `on_item_created`.
- raw: one loop, `XREADGROUP COUNT=CONSUMER_BATCH_SIZE`, the messages of a batch handled
  CONSUMER_CONCURRENCY at a time, then `XACK`; `noop` does nothing else, `real` runs the same
  SQL as the service (the dedupe row and the effect, in one transaction).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import asyncpg
import redis.asyncio as redis

from {{ cookiecutter.package_name }}.items.store import (
    ITEM_CREATED,
    on_item_created,
    on_items_created,
)
from {{ cookiecutter.package_name }}.platform.consumer import (
    ConsumerSettings,
    StreamConsumer,
)
from {{ cookiecutter.package_name }}.platform.db import (
    Connection,
    PostgresPool,
    PostgresSettings,
)
from {{ cookiecutter.package_name }}.platform.logs import configure_logging
from {{ cookiecutter.package_name }}.platform.outbox import OutboxSettings
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.redis_client import (
    RedisClient,
    RedisSettings,
)
from {{ cookiecutter.package_name }}.platform.settings import Settings

DEDUPE_SQL = (
    "INSERT INTO processed_events (event_id, message_id, event_type)"
    " VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING RETURNING true"
)
EFFECT_SQL = "UPDATE items SET processed_at = now() WHERE id = $1 AND processed_at IS NULL"
TIME_LIMIT = 120.0


class BenchSettings(Settings, PostgresSettings, RedisSettings, OutboxSettings, ConsumerSettings):
    """Every variable the bench's components read, in one object."""


async def noop(connection: Connection, payload: dict[str, Any]) -> None:
    """An effect that does nothing: what is left is the consumer's own cost."""


async def fill(settings: BenchSettings, count: int) -> None:
    """COUNT items and one `item.created` event each, in a fresh stream and group."""
    connection = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )
    try:
        ids = await connection.fetch(
            "INSERT INTO items (name, quantity) SELECT 'bench', 1 FROM generate_series(1, $1)"
            " RETURNING id",
            count,
        )
    finally:
        await connection.close()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        await client.delete(settings.events_stream)
        for start in range(0, count, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for row in ids[start : start + 1000]:
                    payload = {"item_id": row["id"], "name": "bench", "quantity": 1}
                    pipe.xadd(
                        settings.events_stream,
                        {
                            "type": ITEM_CREATED,
                            "event_id": str(uuid.uuid4()),
                            "payload": json.dumps(payload),
                        },
                    )
                await pipe.execute()
        await client.xgroup_create(settings.events_stream, settings.consumer_group, id="0")
    finally:
        await client.aclose()


async def run_service(settings: BenchSettings, effect: str, count: int) -> float:
    readiness = Readiness()
    db = PostgresPool(settings, settings, readiness)
    cache = RedisClient(settings, settings, readiness)
    for dependency in (db, cache):
        await dependency.start()
    await readiness.mark_started()
    while not readiness.ready:  # noqa: ASYNC110 (the dependencies connect in the background)
        await asyncio.sleep(0.01)
    if effect == "noop":
        consumer = StreamConsumer(db, cache, settings, settings, settings, {ITEM_CREATED: noop})
    else:  # as the service runs it: the group effect of the items example
        consumer = StreamConsumer(
            db,
            cache,
            settings,
            settings,
            settings,
            {ITEM_CREATED: on_item_created},
            group_handlers={ITEM_CREATED: on_items_created},
        )
    started = time.perf_counter()
    await consumer.start()
    deadline = started + TIME_LIMIT
    while consumer.processed < count and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    for step in ("close_listeners", "drain", "stop_tasks"):
        await getattr(consumer, step)()
    for dependency in (cache, db):
        await dependency.stop_tasks()
        await dependency.close()
    if consumer.processed < count:
        raise SystemExit(f"only {consumer.processed} of {count} messages in {TIME_LIMIT} s")
    return elapsed


async def run_raw(settings: BenchSettings, effect: str, count: int) -> float:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        server_settings={"search_path": settings.database_schema},
    )
    slots = asyncio.Semaphore(settings.consumer_concurrency)
    stream, group, name = settings.events_stream, settings.consumer_group, "raw"

    async def handle(message_id: str, fields: dict[str, str]) -> None:
        async with slots:
            if effect == "real":
                payload = json.loads(fields["payload"])
                async with pool.acquire() as connection, connection.transaction():
                    first = await connection.fetchval(
                        DEDUPE_SQL, fields["event_id"], message_id, fields["type"]
                    )
                    if first:
                        await connection.execute(EFFECT_SQL, payload["item_id"])
            await client.xack(stream, group, message_id)

    done = 0
    started = time.perf_counter()
    deadline = started + TIME_LIMIT
    try:
        while done < count and time.perf_counter() < deadline:
            reply: Any = await client.xreadgroup(
                group, name, {stream: ">"}, count=settings.consumer_batch_size, block=1000
            )
            messages = reply[0][1] if reply else []
            await asyncio.gather(*(handle(mid, fields) for mid, fields in messages))
            done += len(messages)
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
        await client.aclose()
    if done < count:
        raise SystemExit(f"only {done} of {count} messages in {TIME_LIMIT} s")
    return elapsed


async def bench(mode: str, effect: str, count: int) -> float:
    settings = BenchSettings()
    await fill(settings, count)
    run = run_service if mode == "service" else run_raw
    return count / await run(settings, effect, count)


def main() -> None:
    mode, effect, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode not in ("service", "raw") or effect not in ("noop", "real"):
        raise SystemExit("usage: python -m bench.bench_consumer {service|raw} {noop|real} COUNT")
    # Not the service's default (info): stdout carries the result. The consumer writes no line
    # per message at info either, so the figure is the same.
    configure_logging("warning", "json")
    print(json.dumps({"rate": asyncio.run(bench(mode, effect, count))}))


if __name__ == "__main__":
    main()
