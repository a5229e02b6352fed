"""Consumer metrics and shutdown report: a poison message, backlog figures, a real SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

from prometheus_client import REGISTRY

from {{ cookiecutter.package_name }}.items.store import ITEM_CREATED
from {{ cookiecutter.package_name }}.platform.consumer import StreamConsumer
from {{ cookiecutter.package_name }}.platform.db import PostgresPool
from {{ cookiecutter.package_name }}.platform.dependency import DependencyUnavailableError
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.redis_client import RedisClient

from .consumer_support import backends, consumer_env, migrated, started, stop_service
from .metrics_support import scrape
from .service import AllSettings


async def test_processed_failed_and_dead_lettered_counted_and_reported() -> None:
    env = consumer_env(CONSUMER_MAX_DELIVERIES="2")
    with migrated(env):
        async with backends(env) as b:
            good = [
                {"type": ITEM_CREATED, "event_id": str(uuid.uuid4()), "payload": json.dumps(p)}
                for p in ({"item_id": item_id} for item_id in await b.insert_items(2))
            ]
            poison = {"type": "item.exploded", "event_id": str(uuid.uuid4()), "payload": "{}"}
            await b.xadd_all([good[0], poison, good[1]])
            with started(env) as service:
                service.wait_ready()

                async def settled() -> bool:
                    return (
                        await b.processed() == 2
                        and len(await b.dead_letters()) == 1
                        and await b.pending() == 0
                    )

                await b.wait_until(settled, "good processed, poison dead-lettered", 20, service)
                samples = await asyncio.to_thread(scrape, service)
                assert await stop_service(service, signal.SIGTERM) == 0, service.output()

    messages = "consumer_messages_total"
    assert samples.get(messages, outcome="processed") == 2
    assert samples.get(messages, outcome="failed") == 1  # the poison's first delivery
    assert samples.get(messages, outcome="dead_lettered") == 1
    assert samples.get("consumer_pending_messages") == 0
    assert samples.get("consumer_lag_messages") == 0
    assert samples.get("db_pool_connections") >= 1
    [report] = service.events("shutdown_complete")
    assert report["drained"]["consumer"] == {
        "messages_in_flight_at_close": 0,
        "messages_finished": 0,
        "messages_left_pending": 0,
    }


async def test_backlog_gauges_read_pending_and_lag_of_the_group() -> None:
    env = consumer_env()
    settings = AllSettings.model_validate({key.lower(): value for key, value in env.items()})
    async with backends(env) as b:
        readiness = Readiness()
        client = RedisClient(settings, settings, readiness)
        await client.start()
        db = PostgresPool(settings, settings, readiness)
        consumer = StreamConsumer(db, client, settings, settings, settings, {})
        try:
            await consumer._refresh_backlog()  # not connected, no stream: nothing, no error
            await b.redis.xgroup_create(b.stream, b.group, id="0", mkstream=True)
            await b.xadd_all([{"type": ITEM_CREATED, "payload": "{}"} for _ in range(3)])
            await b.redis.xreadgroup(b.group, "another-pod", {b.stream: ">"}, count=1)
            for _ in range(250):  # connected in the background
                try:
                    client.ensure_available()
                    break
                except DependencyUnavailableError:
                    await asyncio.sleep(0.02)
            await consumer._refresh_backlog()
            pending = REGISTRY.get_sample_value("consumer_pending_messages")
            assert (pending, REGISTRY.get_sample_value("consumer_lag_messages")) == (1, 2)
        finally:
            await client.close()
            await b.redis.delete(b.stream)
