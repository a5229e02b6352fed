"""The items HTTP API in-process, over the real Postgres and Redis components: outbox, idempotency,
validation, cache-aside, deadlines (504, never 500), and the pools' own start and close."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from {{ cookiecutter.package_name }}.app import MIGRATIONS
from {{ cookiecutter.package_name }}.items.routes import item_routes
from {{ cookiecutter.package_name }}.platform import outbox
from {{ cookiecutter.package_name }}.platform.http_server import create_app
from {{ cookiecutter.package_name }}.platform.inflight import InFlight
from {{ cookiecutter.package_name }}.platform.migrations import migrate

from .items_support import (
    DEFAULT_DATABASE_URL,
    Backend,
    connect_schema,
    isolated_env,
    isolated_settings,
    started_backend,
    tcp_proxy,
)
from .service import drop_isolated
from .support import throwaway_redis, wait_until

Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def http_client(backend: Backend) -> AsyncIterator[Client]:
    routes = [item_routes(backend.store)]
    app = create_app(backend.settings, backend.readiness, InFlight(), routes)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with started_backend(request_timeout=1.0) as started:
        yield started


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[Client]:
    async with http_client(backend) as started:
        yield started


async def _create(client: Client, body: Any, key: str | None = None) -> tuple[int, Any]:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post("/v1/items", json=body, headers=headers)
    return response.status, await response.json()


async def _count(backend: Backend, table: str) -> int:
    rows = await backend.fetch(f"SELECT count(*) AS n FROM {table}")
    return int(rows[0]["n"])


async def test_create_writes_the_item_and_its_event_together(
    client: Client, backend: Backend
) -> None:
    response = await client.post(
        "/v1/items", json={"name": "widget", "quantity": 3}, headers={"X-Request-ID": "rid-1"}
    )
    body = await response.json()
    assert response.status == 201
    assert (body["name"], body["quantity"]) == ("widget", 3)
    [row] = await backend.fetch("SELECT id, name, quantity FROM items")
    assert dict(row) == {"id": body["id"], "name": "widget", "quantity": 3}
    [event] = await backend.fetch("SELECT stream, event_type, payload, headers FROM outbox")
    assert event["stream"] == backend.settings.events_stream
    assert event["event_type"] == "item.created"
    assert json.loads(event["payload"]) == {"item_id": body["id"], "name": "widget", "quantity": 3}
    # The request id travels in the event's headers, beside the payload, not in it.
    assert json.loads(event["headers"])["request_id"] == "rid-1"


async def test_enqueue_writes_only_within_the_callers_transaction(backend: Backend) -> None:
    async with backend.db.pool.acquire() as connection:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await outbox.enqueue(connection, "thing.done", {"n": 1}, stream="s")
    async with backend.db.transaction() as connection:
        event_id = await outbox.enqueue(connection, "thing.done", {"n": 1}, stream="s")
        with pytest.raises(TypeError):  # not JSON: refused before anything is written
            await outbox.enqueue(connection, "thing.done", {"n": object()}, stream="s")
    [row] = await backend.fetch("SELECT event_id, stream, event_type, payload, headers FROM outbox")
    assert (row["event_id"], row["stream"], row["event_type"]) == (event_id, "s", "thing.done")
    assert json.loads(row["payload"]) == {"n": 1}
    assert json.loads(row["headers"]) == {}  # outside a request or RPC: no request id


async def test_the_relay_keeps_the_outbox_order_while_another_replica_holds_a_batch(
    backend: Backend,
) -> None:
    """Another replica's relay holds the first event's row (mid-batch): this relay publishes
    nothing rather than the later event first, without waiting on the lock, and publishes the
    rest after it, so the stream keeps the outbox's order across replicas (with `SKIP LOCKED`
    it published the second event at once)."""
    stream = backend.settings.events_stream  # isolated, dropped after the test
    async with backend.db.transaction() as connection:
        first = await outbox.enqueue(connection, "thing.done", {"n": 1}, stream=stream)
        second = await outbox.enqueue(connection, "thing.done", {"n": 2}, stream=stream)
    relay = outbox.OutboxRelay(backend.db, backend.redis, backend.settings, backend.settings)
    other = await connect_schema(backend.settings)  # the other replica's relay
    try:
        async with other.transaction():
            await other.fetch("SELECT id FROM outbox ORDER BY id LIMIT 1 FOR UPDATE")
            assert await asyncio.wait_for(relay.publish_batch(), 5) == 0, "skipped a held row"
            await backend.redis.client.xadd(stream, {"event_id": str(first)})
            await other.execute("DELETE FROM outbox WHERE event_id = $1", first)
        assert await asyncio.wait_for(relay.publish_batch(), 5) == 1
    finally:
        await other.close()
    entries = await backend.redis.client.xrange(stream)
    published = [dict(fields or {}).get("event_id") for _, fields in entries or []]
    assert published == [str(first), str(second)]


async def test_the_relay_stops_at_once_while_it_waits_for_a_connection() -> None:
    """No rows in hand, only waiting for a connection (every one taken here; with the database
    unreachable that wait has no end): the relay's `stop_tasks` returns at once."""
    async with started_backend(db_pool_min_size=1, db_pool_max_size=1) as backend:
        relay = outbox.OutboxRelay(backend.db, backend.redis, backend.settings, backend.settings)
        async with backend.db.pool.acquire():  # the pool's only connection
            await relay.start()
            await asyncio.sleep(0.3)  # the relay now waits for a connection
            await asyncio.wait_for(relay.stop_tasks(), 2)


async def test_repeated_idempotency_key_returns_the_original_item(
    client: Client, backend: Backend
) -> None:
    first = await _create(client, {"name": "a", "quantity": 1}, key="key-1")
    again = await _create(client, {"name": "other", "quantity": 9}, key="key-1")
    assert first[0] == 201
    assert again == (200, first[1])
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (1, 1)
    # without a key (or an empty one) every create is a new item
    for key in (None, "", None):
        assert (await _create(client, {"name": "a", "quantity": 1}, key=key))[0] == 201
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (4, 4)


async def test_concurrent_creates_with_one_key_make_one_row(
    client: Client, backend: Backend
) -> None:
    results = await asyncio.gather(
        *(_create(client, {"name": f"n{i}", "quantity": i}, key="same") for i in range(12))
    )
    assert sorted(status for status, _ in results) == [200] * 11 + [201]
    assert len({json.dumps(body, sort_keys=True) for _, body in results}) == 1
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (1, 1)


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"name", "quantity"}),
        ({"name": "", "quantity": 1}, {"name"}),
        ({"name": "x" * 201, "quantity": 1}, {"name"}),
        ({"name": "x", "quantity": -1}, {"quantity"}),
        ({"name": "x", "quantity": "3"}, {"quantity"}),
        ({"name": "x", "quantity": True}, {"quantity"}),
        ({"name": "x", "quantity": 1.5}, {"quantity"}),
        ({"name": 5, "quantity": 10**10}, {"name", "quantity"}),
        ({"name": "x", "quantity": 1, "colour": "red"}, {"colour"}),
        ({"name": "a\x00b", "quantity": 1}, {"name"}),
        ({"name": "x", "quantity": 2**64}, {"quantity"}),
        ([{"name": "x", "quantity": 1}], {"body"}),
    ],
)
async def test_invalid_input_is_400_naming_the_fields_and_writes_nothing(
    client: Client, backend: Backend, payload: Any, fields: set[str]
) -> None:
    status, body = await _create(client, payload)
    assert (status, body["status"]) == (400, 400)
    assert set(body["field"].split(", ")) == fields
    assert all(field in body["error"] for field in fields - {"body"})
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (0, 0)


async def test_bad_json_and_bad_idempotency_key_are_400(client: Client, backend: Backend) -> None:
    broken = await client.post(
        "/v1/items", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert (broken.status, (await broken.json())["field"]) == (400, "body")
    for key in ("k" * 201, "tab\there"):
        status, body = await _create(client, {"name": "x", "quantity": 1}, key=key)
        assert (status, body["field"]) == (400, "idempotency_key")
    assert await _count(backend, "items") == 0


async def test_get_reads_through_the_redis_cache(client: Client, backend: Backend) -> None:
    _, created = await _create(client, {"name": "cached", "quantity": 2})
    got = await client.get(f"/v1/items/{created['id']}")
    assert (got.status, await got.json()) == (200, created)
    key = f"{backend.cache.prefix}item:{created['id']}"
    cache = redis.Redis.from_url(backend.settings.redis_url, decode_responses=True)
    try:
        assert 0 < await cache.ttl(key) <= backend.cache.ttl_seconds
        # Changed behind the cache's back: the cached copy answers until it is gone.
        connection = await connect_schema(backend.settings)
        await connection.execute("UPDATE items SET name = 'changed' WHERE id = $1", created["id"])
        await connection.close()
        assert (await (await client.get(f"/v1/items/{created['id']}")).json())["name"] == "cached"
        await cache.delete(key)
        assert (await (await client.get(f"/v1/items/{created['id']}")).json())["name"] == "changed"
        assert await cache.exists(key) == 1
    finally:
        await cache.aclose()


@pytest.mark.parametrize(("item_id", "status"), [("999999", 404), ("0", 400), ("abc", 400)])
async def test_unknown_id_is_404_bad_id_is_400(client: Client, item_id: str, status: int) -> None:
    response = await client.get(f"/v1/items/{item_id}")
    body = await response.json()
    assert (response.status, body["field"]) == (status, "id")


async def test_bad_ids_never_reach_the_database(client: Client) -> None:
    for item_id in ("-3", "1" * 19, "1.5", "%EF%BC%91"):  # the last is a full-width digit one
        response = await client.get(f"/v1/items/{item_id}")
        assert (response.status, (await response.json())["field"]) == (400, "id"), item_id


async def test_database_timeout_is_504_and_leaves_no_half_state(
    client: Client, backend: Backend
) -> None:
    blocker = await connect_schema(backend.settings)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # inserts and reads wait
        began = time.monotonic()
        status, body = await _create(client, {"name": "slow", "quantity": 1})
        assert (status, body["error"]) == (504, "deadline exceeded")
        assert len(body["instance"]) == 32  # the request id (generated: the client sent none)
        got = await client.get("/v1/items/424242")  # not cached: reaches the locked table
        assert got.status == 504
        assert time.monotonic() - began < 6  # two 1 s budgets, with room for a slow machine
        await transaction.rollback()
    finally:
        await blocker.close()
    await asyncio.sleep(0.3)  # a cancelled-but-still-running insert would commit by now
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (0, 0)
    # the cancelled connections went back to the pool in a usable state
    for _ in range(backend.settings.db_pool_max_size + 2):
        assert (await _create(client, {"name": "after", "quantity": 1}))[0] == 201


async def test_redis_timeout_is_504_not_500() -> None:
    async with (
        throwaway_redis(keep_data=False) as server,
        started_backend(request_timeout=0.5, redis_url=server.url) as backend,
        http_client(backend) as client,
    ):
        _, created = await _create(client, {"name": "x", "quantity": 1})
        admin = redis.Redis.from_url(server.url)
        await admin.client_pause(3000)  # a hung Redis: every client's commands wait
        await admin.aclose()
        began = time.monotonic()
        response = await client.get(f"/v1/items/{created['id']}")
        assert response.status == 504
        assert time.monotonic() - began < 2.5


async def test_cache_outage_costs_latency_not_the_answer() -> None:
    async with (
        throwaway_redis(keep_data=False) as server,
        started_backend(redis_url=server.url) as backend,
        http_client(backend) as client,
    ):
        _, created = await _create(client, {"name": "x", "quantity": 1})
        server.kill()
        with capture_logs() as logs:
            got = await client.get(f"/v1/items/{created['id']}")
            assert (got.status, await got.json()) == (200, created)
            assert (await _create(client, {"name": "y", "quantity": 1}))[0] == 201
        assert any(entry["event"] == "cache_unavailable" for entry in logs)
        await server.start()  # same port: the client reconnects by itself
        got = await client.get(f"/v1/items/{created['id']}")
        assert (got.status, await got.json()) == (200, created)
        fresh = redis.Redis.from_url(server.url)
        key = f"{backend.cache.prefix}item:{created['id']}"
        assert await fresh.exists(key) == 1
        await fresh.aclose()


async def test_waits_for_postgres_then_serves_then_refuses_once_closing() -> None:
    with tcp_proxy() as proxy:
        url = f"postgresql://postgres:s3cret@127.0.0.1:{proxy.port}/test"
        settings = isolated_settings(database_url=url)
        await migrate(
            settings.model_copy(update={"database_url": DEFAULT_DATABASE_URL}), MIGRATIONS
        )
        backend = Backend(settings)
        try:
            with capture_logs() as logs:
                await backend.start()
                async with http_client(backend) as client:
                    await wait_until(
                        lambda: len([e for e in logs if e["event"] == "dependency_waiting"]) >= 3,
                        what="three connection attempts",
                    )
                    ready = await client.get("/readyz")
                    assert (ready.status, await ready.json()) == (
                        503,
                        {"status": "not ready", "reason": "waiting for postgres"},
                    )
                    assert (await client.get("/livez")).status == 200
                    status, body = await _create(client, {"name": "x", "quantity": 1})
                    assert (status, body["error"]) == (503, "postgres is not available")
                    assert len(body["instance"]) == 32  # the request id

                    proxy.up()
                    await backend.wait_ready()
                    assert (await client.get("/readyz")).status == 200
                    assert (await _create(client, {"name": "x", "quantity": 1}))[0] == 201

                    await backend.db.close()
                    # refused by the component: asyncpg's 'pool is closing' would be a 500
                    status, body = await _create(client, {"name": "y", "quantity": 1})
                    assert (status, body["error"]) == (503, "postgres is not available")
            waiting = [e for e in logs if e["event"] == "dependency_waiting"]
            assert {e["url"] for e in waiting} == {
                f"postgresql://postgres:***@127.0.0.1:{proxy.port}/test"
            }
            assert [e["attempt"] for e in waiting[:3]] == [1, 2, 3]
            assert "s3cret" not in repr(logs)
        finally:
            await backend.close()
            drop_isolated(isolated_env(settings))


async def test_pool_close_is_bounded_then_terminates_naming_checked_out(backend: Backend) -> None:
    held = await backend.db.pool.acquire()
    began = time.monotonic()
    with capture_logs() as logs:
        await backend.db.close()
    assert time.monotonic() - began < backend.settings.db_close_timeout + 2
    [terminated] = [e for e in logs if e["event"] == "postgres_pool_terminated"]
    assert terminated["connections_checked_out"] == 1
    with pytest.raises(asyncpg.InterfaceError):  # terminated, not left open
        await held.fetchval("SELECT 1")


async def test_pool_close_without_checked_out_connections_is_graceful() -> None:
    async with started_backend(db_close_timeout=5.0) as backend:
        began = time.monotonic()
        with capture_logs() as logs:
            await backend.db.close()
        assert time.monotonic() - began < 3
        assert [e for e in logs if e["event"] == "postgres_pool_terminated"] == []


async def test_redis_close_closes_its_connection_pool() -> None:
    async with (
        throwaway_redis(keep_data=False) as server,
        started_backend(redis_url=server.url) as backend,
    ):
        admin = redis.Redis.from_url(server.url, decode_responses=True)

        async def clients() -> int:
            return int((await admin.info("clients"))["connected_clients"])

        await backend.redis.client.get("warm-up")
        assert await clients() >= 2  # ours and the component's
        await backend.redis.close()
        await wait_until(lambda: _equals(clients(), 1), "component's connections closed", 5)
        await admin.aclose()


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)
