"""The real service as a subprocess through dependency outages: Postgres down at start, Redis
restarted while serving.

A Postgres outage is a proxy of the test's own, a Redis outage a redis-server of its own: the
shared servers are never stopped. Every test has a schema, streams and keys of its own.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp
{%- if cookiecutter.use_grpc == "yes" %}
import grpc
{%- endif %}
import redis.asyncio as redis
{%- if cookiecutter.use_grpc == "yes" %}
from grpc_health.v1 import health_pb2, health_pb2_grpc
{%- endif %}

from .items_support import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    FAST,
    FAST_CONSUMER,
    USE_CONSUMER,
    get_json,
    http_create,
    query,
    stream_item_ids,
    tcp_proxy,
)
from .service import Service, drop_isolated, isolated_names
from .support import throwaway_redis, wait_until


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
                lambda: len(service.events("dependency_waiting")) >= 3, "three attempts", 20
            )
            status, body = await get_json(f"{service.url}/readyz")
            assert (status, body["reason"]) == (503, "waiting for postgres")
            assert (await get_json(f"{service.url}/livez"))[0] == 200
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
                assert (await http_create(session, service.url, "after-start"))[0] == 201
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
    async with throwaway_redis(keep_data=False) as server:
        service = Service(**FAST, **FAST_CONSUMER, REDIS_URL=server.url)
        migrated = await asyncio.to_thread(service.run_command, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        service.start()
        env = service.env
        try:
            await asyncio.to_thread(service.wait_ready)
            async with aiohttp.ClientSession() as session:
                _, before = await http_create(session, service.url, "before")
                await _wait_event_through(env, server.url, before["id"])

                server.kill()
                for path in ("/livez", "/readyz", f"/v1/items/{before['id']}"):
                    assert (await get_json(f"{service.url}{path}"))[0] == 200, path
                status, during = await http_create(session, service.url, "during")
                assert status == 201  # the event waits in the outbox
                await asyncio.sleep(0.3)  # the relay and the consumer fail and back off

                await server.start()  # same port, empty: no stream, no group
                await _wait_event_through(env, server.url, during["id"])
                _, after = await http_create(session, service.url, "after")
                await _wait_event_through(env, server.url, after["id"])
                got = await get_json(f"{service.url}/v1/items/{after['id']}")
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
            rows = await query(env, "SELECT processed_at FROM items WHERE id = $1", item_id)
            return rows[0]["processed_at"] is not None
        return (await stream_item_ids(env, redis_url))[item_id] == 1

    await wait_until(through, f"item {item_id} processed", 30)  # backoffs reach 5 s
{%- if cookiecutter.use_grpc == "yes" %}


async def _grpc_health(service: Service) -> int:
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)
{%- endif %}
