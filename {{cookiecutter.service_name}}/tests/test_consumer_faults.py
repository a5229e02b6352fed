"""The real service's consumer against bad events and a Redis restart.

Poison events go to the dead-letter stream after CONSUMER_MAX_DELIVERIES attempts, with their
error, without holding up the others. A Redis restart (a throwaway redis-server with an AOF, so
its data survives) in the middle of consumption costs time, never an event.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

from {{ cookiecutter.package_name }}.items.store import ITEM_CREATED

from .consumer_support import (
    assert_exactly_once,
    backends,
    consumer_env,
    migrated,
    started,
    stop_service,
)
from .support import throwaway_redis

GOOD = 300
TOTAL = 5000
MAX_DELIVERIES = 3


async def test_poison_events_dead_lettered_after_max_deliveries_others_processed() -> None:
    env = consumer_env(CONSUMER_MAX_DELIVERIES=str(MAX_DELIVERIES))
    with migrated(env):
        async with backends(env) as b:
            item_ids = await b.insert_items(GOOD)
            good = [
                {
                    "type": ITEM_CREATED,
                    "event_id": str(uuid.uuid4()),
                    "payload": json.dumps({"item_id": item_id}),
                }
                for item_id in item_ids
            ]
            # Three kinds of poison, each failing on every delivery, spread over the stream.
            poison = {
                "unknown item": {
                    "type": ITEM_CREATED,
                    "event_id": str(uuid.uuid4()),
                    "payload": json.dumps({"item_id": item_ids[-1] + 1_000_000}),
                },
                "no handler for event type 'item.exploded'": {
                    "type": "item.exploded",
                    "event_id": str(uuid.uuid4()),
                    "payload": json.dumps({"item_id": item_ids[0]}),
                },
                "JSONDecodeError": {
                    "type": ITEM_CREATED,
                    "event_id": str(uuid.uuid4()),
                    "payload": "{not json",
                },
            }
            unknown_item, unknown_type, bad_json = poison.values()
            events = [*good[:50], unknown_item, *good[50:150], unknown_type]
            events += [*good[150:250], bad_json, *good[250:]]
            assert len(events) == GOOD + 3
            sent = await b.xadd_all(events)
            message_ids = dict(zip((e["event_id"] for e in events), sent, strict=True))

            with started(env) as service:

                async def settled() -> bool:
                    return (
                        await b.processed() == GOOD
                        and len(await b.dead_letters()) == len(poison)
                        and await b.pending() == 0
                    )

                await b.wait_until(settled, "good processed, poison dead-lettered", 45, service)
                assert await stop_service(service, signal.SIGTERM) == 0, service.output()

            # Every good event's effect, once; no trace of the poison in Postgres.
            expected = {e["event_id"]: message_ids[e["event_id"]] for e in good}
            assert await b.processed_ids() == expected
            assert await b.unprocessed_items() == 0
            assert await b.pending() == 0
            assert await b.acked_without_effect() == [
                message_ids[e["event_id"]] for e in poison.values()
            ]

            dead = {fields["original_id"]: fields for _, fields in await b.dead_letters()}
            assert len(dead) == len(poison)
            for error, event in poison.items():
                entry = dead[message_ids[event["event_id"]]]
                assert entry["original_stream"] == env["EVENTS_STREAM"]
                assert entry["deliveries"] == str(MAX_DELIVERIES)
                assert error in entry["error"]
                # The original event travels along, untouched, for a replay after a fix.
                assert {key: entry[key] for key in event} == event

            # Retried before giving up: one failure logged per earlier delivery.
            failures = service.events("consume_failed")
            for event in poison.values():
                mine = [f for f in failures if f["message_id"] == message_ids[event["event_id"]]]
                assert sorted(f["deliveries"] for f in mine) == list(range(1, MAX_DELIVERIES))
            assert len(service.events("consume_dead_lettered")) == len(poison)
            assert service.events("consumer_stopped")[0]["dead_lettered"] == len(poison)


async def test_redis_restart_mid_consumption_loses_no_event() -> None:
    async with throwaway_redis() as server:
        env = consumer_env(REDIS_URL=server.url)
        with migrated(env):
            async with backends(env) as b:
                published = await b.publish_items(TOTAL)
                with started(env) as service:

                    async def progressed() -> bool:
                        return await b.processed() >= 1000

                    await b.wait_until(progressed, "1000 processed", 45, service)
                    assert server.stop() == 0  # SIGTERM: a clean stop, AOF flushed
                    assert await b.processed() < TOTAL
                    await asyncio.to_thread(service.wait_for_event, "consumer_backing_off", 15)
                    await asyncio.sleep(1.0)  # down for a while, the service keeps trying
                    assert service.process is not None
                    assert service.process.poll() is None, service.output()

                    await server.start()
                    await b.wait_until(lambda: b.done(TOTAL), "all 5000 processed", 60, service)
                    assert await stop_service(service, signal.SIGTERM) == 0, service.output()
                await assert_exactly_once(b, set(published.message_ids))
                assert await b.processed_ids() == published.message_ids
                assert (await b.stream_events()).keys() == set(published.message_ids.values())
