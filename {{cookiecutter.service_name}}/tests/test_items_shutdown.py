"""The real service as a subprocess with its pools: creates across SIGTERM, pools closed last.

Every test has a schema, streams and keys of its own (see `items_support`).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import aiohttp
import asyncpg
{%- if cookiecutter.use_grpc == "yes" %}
import grpc

from {{ cookiecutter.package_name }}.v1 import items_pb2, items_pb2_grpc
{%- endif %}

from .items_support import (
    DEFAULT_DATABASE_URL,
    FAST,
    FAST_CONSUMER,
    USE_CONSUMER,
    equals,
    http_create,
    query,
    stream_item_ids,
)
from .service import Service, isolated_names, running_service
from .support import wait_until

TROUBLE = (
    "http_unhandled_error",
    "http_dependency_failed",
    "grpc_unhandled_error",
    "grpc_dependency_failed",
    "outbox_publish_failed",
    "consume_failed",
    "consume_failed_transient",
    "shutdown_step_failed",
    "task_unfinished",
    "postgres_pool_terminated",
    "component_failed",
)
"""Log events a clean shutdown never has."""


def _assert_clean(service: Service) -> None:
    """No handler, relay or consumer saw a pool closing (or anything else go wrong)."""
    for name in TROUBLE:
        assert service.events(name) == [], f"{name}:\n{service.output()}"
    for line in service.lines:
        assert "pool is closing" not in line, line
        assert "is not available" not in line, line


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
            left = await query(names, "SELECT count(*) AS n FROM outbox")
            if USE_CONSUMER:
                left += await query(
                    names, "SELECT count(*) AS n FROM items WHERE processed_at IS NULL"
                )
            return sum(int(row["n"]) for row in left) == 0

        await wait_until(settled, "every event published and processed", within)
        again.signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait_exit, 20) == 0, again.output()
    finally:
        again.kill()


async def _assert_each_item_once_with_one_event(env: dict[str, str]) -> list[asyncpg.Record]:
    items = await query(env, "SELECT id, idempotency_key, processed_at FROM items")
    stream = await stream_item_ids(env)
    assert stream == Counter(row["id"] for row in items)  # one event per item, none without
    if USE_CONSUMER:
        assert all(row["processed_at"] is not None for row in items)
        [processed] = await query(env, "SELECT count(*) AS n FROM processed_events")
        assert processed["n"] == len(items)
    return items


async def _assert_no_half_state(env: dict[str, str]) -> None:
    """Right after a shutdown: every item's event is either still in the outbox or in the
    stream, exactly once, and there is no event without its item."""
    items = await query(env, "SELECT id FROM items")
    waiting = await query(env, "SELECT (payload->>'item_id')::bigint AS id FROM outbox")
    events = await stream_item_ids(env) + Counter(row["id"] for row in waiting)
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
                    status, body = await http_create(session, service.url, key)
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
                early = [await http_create(session, service.url, f"early-{i}") for i in range(5)]
                assert {status for status, _ in early} == {201}
{%- if cookiecutter.use_consumer == "yes" %}
                effects = "INSERT INTO processed_events"
                await wait_until(lambda: held(effects), "the consumer held in its effects", 15)
                await asyncio.sleep(0.3)  # the rest of its batch, if any
                consumer_held = await held(effects)
{%- endif %}
                await gate.execute("LOCK TABLE items IN EXCLUSIVE MODE")
                late = [
                    asyncio.create_task(http_create(session, service.url, f"late-{i}"))
                    for i in range(6)
                ]
                creates = "INSERT INTO items"
                await wait_until(lambda: equals(held(creates), 6), "six creates held", 15)
                service.signal(signal.SIGTERM)
                await wait_until(
                    lambda: any(
                        e["phase"] == "close_listeners" for e in service.events("shutdown_phase")
                    ),
                    "listeners closed",
                    10,
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
        rows = await query(env, "SELECT idempotency_key, processed_at FROM items")
        assert len(rows) == 11
        # the effects held across SIGTERM committed during the drain, before the pools closed
        assert sum(row["processed_at"] is not None for row in rows) >= consumer_held
        await _assert_no_half_state(env)
