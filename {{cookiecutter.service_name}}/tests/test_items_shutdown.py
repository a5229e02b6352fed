"""The real service as a subprocess with its pools: creates across SIGTERM, pools closed last,
Postgres down at start, Redis restarted while serving.

Every test has a schema, streams and keys of its own; a Postgres outage is a proxy of the test's
own and a Redis outage a redis-server of its own: the shared servers are never stopped.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import aiohttp
import asyncpg
{%- if cookiecutter.use_grpc == "yes" %}
import grpc
{%- endif %}
import redis.asyncio as redis
{%- if cookiecutter.use_grpc == "yes" %}
from grpc_health.v1 import health_pb2, health_pb2_grpc
{%- endif %}

{%- if cookiecutter.use_grpc == "yes" %}

from {{ cookiecutter.package_name }}.v1 import items_pb2, items_pb2_grpc
{%- endif %}

from .items_support import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    tcp_proxy,
    throwaway_redis,
    wait_until,
)
from .service import Service, drop_isolated, isolated_names, running_service

USE_CONSUMER = {{ "True" if cookiecutter.use_consumer == "yes" else "False" }}
FAST = {"DRAIN_DELAY": "0.5", "SHUTDOWN_TIMEOUT": "10", "DEPENDENCY_MAX_BACKOFF": "0.5"}
{%- if cookiecutter.use_consumer == "yes" %}
FAST_CONSUMER = {"CONSUMER_BLOCK_MS": "300"}
{%- else %}
FAST_CONSUMER: dict[str, str] = {}
{%- endif %}
TROUBLE = (
    "http_unhandled_error",
    "outbox_publish_failed",
    "consume_failed",
    "consume_failed_transient",
    "shutdown_step_failed",
    "task_unfinished",
    "postgres_pool_terminated",
    "component_failed",
)
"""Log events a clean shutdown never has."""


async def _query(env: dict[str, str], sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(
        DEFAULT_DATABASE_URL, server_settings={"search_path": env["DATABASE_SCHEMA"]}
    )
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def _stream_item_ids(env: dict[str, str], url: str = DEFAULT_REDIS_URL) -> Counter[int]:
    """How many item.created events the stream holds, per item id."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = await client.xrange(env["EVENTS_STREAM"]) or []
    finally:
        await client.aclose()
    return Counter(
        int(json.loads(fields["payload"])["item_id"])
        for _, fields in entries
        if fields and fields.get("type") == "item.created"
    )


def _assert_clean(service: Service) -> None:
    """No handler, relay or consumer saw a pool closing (or anything else go wrong)."""
    for name in TROUBLE:
        assert service.events(name) == [], f"{name}:\n{service.output()}"
    for line in service.lines:
        assert "pool is closing" not in line, line
        assert "is not available" not in line, line


async def _http_create(
    session: aiohttp.ClientSession, url: str, key: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": key, "Connection": "close"}
    body = {"name": key, "quantity": 1}
    async with session.post(f"{url}/v1/items", json=body, headers=headers) as response:
        return response.status, await response.json()


async def _run_to_completion(first: Service, within: float = 30.0) -> None:
    """Start the service again on the same schema and streams until every item's event went
    through (the relay publishes what was committed during the drain; the consumer, if any,
    picks up what it left pending)."""
    names = {key: first.env[key] for key in isolated_names()}
    again = Service(**FAST, **FAST_CONSUMER, **names)
    again.start()
    try:
        await asyncio.to_thread(again.wait_ready)

        async def settled() -> bool:
            left = await _query(names, "SELECT count(*) AS n FROM outbox")
            if USE_CONSUMER:
                left += await _query(
                    names, "SELECT count(*) AS n FROM items WHERE processed_at IS NULL"
                )
            return sum(int(row["n"]) for row in left) == 0

        await wait_until(settled, within, "every event published and processed")
        again.signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait_exit, 20) == 0, again.output()
    finally:
        again.kill()


async def _assert_each_item_once_with_one_event(env: dict[str, str]) -> list[asyncpg.Record]:
    items = await _query(env, "SELECT id, idempotency_key, processed_at FROM items")
    stream = await _stream_item_ids(env)
    assert stream == Counter(row["id"] for row in items)  # one event per item, none without
    if USE_CONSUMER:
        assert all(row["processed_at"] is not None for row in items)
        [processed] = await _query(env, "SELECT count(*) AS n FROM processed_events")
        assert processed["n"] == len(items)
    return items


async def _assert_no_half_state(env: dict[str, str]) -> None:
    """Right after a shutdown: every item's event is either still in the outbox or in the
    stream, exactly once, and there is no event without its item."""
    items = await _query(env, "SELECT id FROM items")
    waiting = await _query(env, "SELECT (payload->>'item_id')::bigint AS id FROM outbox")
    events = await _stream_item_ids(env) + Counter(row["id"] for row in waiting)
    assert events == Counter(row["id"] for row in items)


async def test_creates_across_sigterm_exist_once_with_their_event() -> None:
    """HTTP{% if cookiecutter.use_grpc == "yes" %} and gRPC{% endif %} creates from concurrent
    clients, SIGTERM in the middle: every success is one row with one event; a failure left
    either nothing or a complete item (its response was lost), never half of one."""
    succeeded: dict[str, int] = {}
    failed: dict[str, str] = {}
    with running_service(**FAST, **FAST_CONSUMER) as service:
        env = service.env

        async def http_worker(worker: int, session: aiohttp.ClientSession) -> None:
            for n in range(400):
                key = f"http-{worker}-{n}"
                try:
                    status, body = await _http_create(session, service.url, key)
                except (aiohttp.ClientError, OSError) as error:
                    failed[key] = type(error).__name__
                    return
                assert status == 201, (status, body)
                succeeded[key] = body["id"]
{%- if cookiecutter.use_grpc == "yes" %}

        async def grpc_worker(worker: int, stub: items_pb2_grpc.ItemServiceAsyncStub) -> None:
            for n in range(400):
                key = f"grpc-{worker}-{n}"
                request = items_pb2.CreateItemRequest(name=key, quantity=1)
                try:
                    reply = await stub.CreateItem(
                        request, metadata=(("idempotency-key", key),), timeout=10
                    )
                except grpc.aio.AioRpcError as error:
                    failed[key] = error.code().name
                    return
                succeeded[key] = reply.id
{%- endif %}

        connector = aiohttp.TCPConnector(limit=0)
{%- if cookiecutter.use_grpc == "yes" %}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            grpc.aio.insecure_channel(service.grpc_target) as channel,
        ):
            stub = items_pb2_grpc.ItemServiceStub(channel)
            workers = [asyncio.create_task(http_worker(i, session)) for i in range(6)]
            workers += [asyncio.create_task(grpc_worker(i, stub)) for i in range(6)]
            await asyncio.sleep(1.0)
            service.signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*workers), 30)
{%- else %}
        async with aiohttp.ClientSession(connector=connector) as session:
            workers = [asyncio.create_task(http_worker(i, session)) for i in range(10)]
            await asyncio.sleep(1.0)
            service.signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*workers), 30)
{%- endif %}
        assert await asyncio.to_thread(service.wait_exit, 20) == 0, service.output()
        _assert_clean(service)
        await _assert_no_half_state(env)
        assert len(succeeded) > 20, "the load never got going"
        assert len(failed) == len(workers), failed  # each worker stopped at its first refusal
        # Refused, never an error of the service (a 5xx, INTERNAL, UNKNOWN). An RPC that grpc
        # core had received but not yet handed to a handler when it stopped ends CANCELLED.
        assert set(failed.values()) <= {
            "ClientConnectorError",
            "ServerDisconnectedError",
            "ClientOSError",
            "UNAVAILABLE",
            "CANCELLED",
        }, failed

        await _run_to_completion(service)
        items = await _assert_each_item_once_with_one_event(env)
        by_key = {row["idempotency_key"]: row["id"] for row in items}
        assert len(by_key) == len(items)
        assert {key: by_key.get(key) for key in succeeded} == succeeded
        assert set(by_key) <= set(succeeded) | set(failed)


async def test_pools_close_last_work_in_flight_keeps_its_connections() -> None:
    """Handlers{% if cookiecutter.use_consumer == "yes" %} and the consumer{% endif %} are held
    inside their transactions (a lock of the test's) across SIGTERM and the drain delay, and
    let go once the listeners are closed: all of it commits, nothing sees a closing pool."""
    with running_service(**FAST, **FAST_CONSUMER, DB_POOL_MAX_SIZE="30") as service:
        env = service.env
        gate = await asyncpg.connect(
            DEFAULT_DATABASE_URL, server_settings={"search_path": env["DATABASE_SCHEMA"]}
        )
        # Not `gate`: inside a transaction, pg_stat_activity is a snapshot taken once.
        watch = await asyncpg.connect(DEFAULT_DATABASE_URL)

        async def held(statement: str) -> int:
            """Connections of the service waiting for the test's lock in `statement`."""
            return int(
                await watch.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE $2",
                    gate.get_server_pid(),
                    statement + "%",
                )
            )

        consumer_held = 0
        try:
            await gate.execute("BEGIN; LOCK TABLE processed_events IN EXCLUSIVE MODE")
            async with aiohttp.ClientSession() as session:
                early = [await _http_create(session, service.url, f"early-{i}") for i in range(5)]
                assert {status for status, _ in early} == {201}
{%- if cookiecutter.use_consumer == "yes" %}
                effects = "INSERT INTO processed_events"
                await wait_until(lambda: held(effects), 15, "the consumer held in its effects")
                await asyncio.sleep(0.3)  # the rest of its batch, if any
                consumer_held = await held(effects)
{%- endif %}
                await gate.execute("LOCK TABLE items IN EXCLUSIVE MODE")
                late = [
                    asyncio.create_task(_http_create(session, service.url, f"late-{i}"))
                    for i in range(6)
                ]
                creates = "INSERT INTO items"
                await wait_until(lambda: _equals(held(creates), 6), 15, "six creates held")
                service.signal(signal.SIGTERM)
                await wait_until(
                    lambda: any(
                        e["phase"] == "close_listeners" for e in service.events("shutdown_phase")
                    ),
                    10,
                    "listeners closed",
                )
                await asyncio.sleep(0.3)
                assert service.process is not None
                assert service.process.poll() is None  # still draining, pools still open
                await gate.execute("ROLLBACK")
                results = await asyncio.wait_for(asyncio.gather(*late), 15)
            assert {status for status, _ in results} == {201}
        finally:
            await gate.close()
            await watch.close()
        assert await asyncio.to_thread(service.wait_exit, 20) == 0, service.output()
        _assert_clean(service)
        rows = await _query(env, "SELECT idempotency_key, processed_at FROM items")
        assert len(rows) == 11
        # the effects held across SIGTERM committed during the drain, before the pools closed
        assert sum(row["processed_at"] is not None for row in rows) >= consumer_held
        await _assert_no_half_state(env)


async def test_postgres_unreachable_at_start_then_ready_when_it_comes_up() -> None:
    with tcp_proxy() as proxy:
        url = f"postgresql://postgres:s3cret@127.0.0.1:{proxy.port}/test"
        service = Service(**FAST, DATABASE_URL=url, DEPENDENCY_CONNECT_TIMEOUT="60")
        migrated = await asyncio.to_thread(
            Service(**{key: service.env[key] for key in isolated_names()}).run_command, "migrate"
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        service.start()
        try:
            await wait_until(
                lambda: len(service.events("dependency_waiting")) >= 3, 20, "three attempts"
            )
            status, body = await _get_json(f"{service.url}/readyz")
            assert (status, body["reason"]) == (503, "waiting for postgres")
            assert (await _get_json(f"{service.url}/livez"))[0] == 200
{%- if cookiecutter.use_grpc == "yes" %}
            assert await _grpc_health(service) == health_pb2.HealthCheckResponse.NOT_SERVING
{%- endif %}
            waiting = service.events("dependency_waiting")
            assert {e["dependency"] for e in waiting} == {"postgres"}
            assert {e["url"] for e in waiting} == {url.replace("s3cret", "***")}
            assert "s3cret" not in service.output()

            proxy.up()
            await asyncio.to_thread(service.wait_ready, 20)
{%- if cookiecutter.use_grpc == "yes" %}
            assert await _grpc_health(service) == health_pb2.HealthCheckResponse.SERVING
{%- endif %}
            async with aiohttp.ClientSession() as session:
                assert (await _http_create(session, service.url, "after-start"))[0] == 201
            service.signal(signal.SIGTERM)
            assert await asyncio.to_thread(service.wait_exit, 20) == 0, service.output()
            [connected] = [
                e for e in service.events("dependency_connected") if e["dependency"] == "postgres"
            ]
            assert connected["attempts"] >= 4
        finally:
            service.kill()
            drop_isolated(service.env | {"DATABASE_URL": DEFAULT_DATABASE_URL})


async def test_redis_restarted_while_serving_the_service_recovers() -> None:
    with throwaway_redis() as server:
        service = Service(**FAST, **FAST_CONSUMER, REDIS_URL=server.url)
        migrated = await asyncio.to_thread(service.run_command, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        service.start()
        env = service.env
        try:
            await asyncio.to_thread(service.wait_ready)
            async with aiohttp.ClientSession() as session:
                _, before = await _http_create(session, service.url, "before")
                await _wait_event_through(env, server.url, before["id"])

                server.stop()
                for path in ("/livez", "/readyz", f"/v1/items/{before['id']}"):
                    assert (await _get_json(f"{service.url}{path}"))[0] == 200, path
                status, during = await _http_create(session, service.url, "during")
                assert status == 201  # the event waits in the outbox
                await asyncio.sleep(1.0)  # the relay and the consumer fail and back off

                server.start()  # same port, empty: no stream, no group
                await _wait_event_through(env, server.url, during["id"])
                _, after = await _http_create(session, service.url, "after")
                await _wait_event_through(env, server.url, after["id"])
                got = await _get_json(f"{service.url}/v1/items/{after['id']}")
                assert got == (200, after)
                cache = redis.Redis.from_url(server.url)
                assert await cache.exists(f"{env['CACHE_PREFIX']}item:{after['id']}") == 1
                await cache.aclose()
            assert service.process is not None
            assert service.process.poll() is None
            service.signal(signal.SIGTERM)
            assert await asyncio.to_thread(service.wait_exit, 20) == 0, service.output()
        finally:
            service.kill()
            drop_isolated(env | {"REDIS_URL": DEFAULT_REDIS_URL})


async def _wait_event_through(env: dict[str, str], redis_url: str, item_id: int) -> None:
    """The item's event reached the stream (and, with a consumer, its effect happened)."""

    async def through() -> bool:
        if USE_CONSUMER:
            rows = await _query(env, "SELECT processed_at FROM items WHERE id = $1", item_id)
            return rows[0]["processed_at"] is not None
        return (await _stream_item_ids(env, redis_url))[item_id] == 1

    await wait_until(through, 20, f"item {item_id} processed")


async def _get_json(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Connection": "close"}) as response,
    ):
        return response.status, await response.json()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
{%- if cookiecutter.use_grpc == "yes" %}


async def _grpc_health(service: Service) -> int:
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)
{%- endif %}
