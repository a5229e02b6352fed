"""The consumer in-process, against real Postgres and Redis: one behaviour per test.

Each test has its own schema, streams and group. Timings are short (BLOCK 200 ms, claim after
300 ms idle) so that redeliveries happen within a second or two.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from {{ cookiecutter.package_name }}.app import MIGRATIONS
from {{ cookiecutter.package_name }}.items.store import (
    ITEM_CREATED,
    on_item_created,
    on_items_created,
)
from {{ cookiecutter.package_name }}.platform.consumer import (
    EffectHandler,
    GroupEffectHandler,
    Message,
    StreamConsumer,
    _messages,
)
from {{ cookiecutter.package_name }}.platform.db import Connection, PostgresPool
from {{ cookiecutter.package_name }}.platform.group_commit import (
    group_size,
    synthetic_event_id,
)
from {{ cookiecutter.package_name }}.platform.migrations import migrate
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.redis_client import RedisClient

from .consumer_support import Backends, backends, consumer_env
from .service import AllSettings, drop_isolated
from .support import wait_until as eventually


@dataclass
class Harness:
    env: dict[str, str]
    db: PostgresPool
    redis: RedisClient
    b: Backends
    consumers: list[StreamConsumer] = field(default_factory=list)

    def settings(self, **overrides: str) -> AllSettings:
        return settings_of({**self.env, **overrides})

    def consumer(
        self,
        handler: EffectHandler = on_item_created,
        group_handler: GroupEffectHandler | None = None,
        **overrides: str,
    ) -> StreamConsumer:
        settings = self.settings(**overrides)
        consumer = StreamConsumer(
            self.db,
            self.redis,
            settings,
            settings,
            settings,
            {ITEM_CREATED: handler},
            group_handlers={ITEM_CREATED: group_handler} if group_handler else None,
        )
        self.consumers.append(consumer)
        return consumer

    async def publish(self, item_ids: list[int], *, with_event_id: bool = True) -> list[str]:
        events = []
        for item_id in item_ids:
            event = {"type": ITEM_CREATED, "payload": json.dumps({"item_id": item_id})}
            if with_event_id:
                event["event_id"] = str(uuid.uuid4())
            events.append(event)
        return await self.b.xadd_all(events)


def settings_of(env: dict[str, str]) -> AllSettings:
    """AllSettings from the test's variables only (validated like the environment's strings)."""
    return AllSettings.model_validate({key.lower(): value for key, value in env.items()})


async def stop(consumer: StreamConsumer) -> None:
    """The shutdown phases the consumer takes part in, in the lifecycle's order."""
    await consumer.close_listeners()
    await asyncio.wait_for(consumer.drain(), 10)
    await asyncio.wait_for(consumer.stop_tasks(), 10)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    env = consumer_env()
    settings = settings_of(env)
    readiness = Readiness()
    db, redis = (
        PostgresPool(settings, settings, readiness),
        RedisClient(settings, settings, readiness),
    )
    try:
        await migrate(settings, MIGRATIONS)
        await db.start()
        await redis.start()

        async def connected() -> bool:
            return readiness.ready

        await readiness.mark_started()
        await eventually(connected, "connected", 30)
        async with backends(env) as b:
            harness = Harness(env, db, redis, b)
            try:
                yield harness
            finally:
                for consumer in harness.consumers:
                    await stop(consumer)
    finally:
        for dependency in (redis, db):
            await dependency.stop_tasks()
            await dependency.close()
        drop_isolated(env)


# -- pure helpers ----------------------------------------------------------------------------


def test_messages_skip_deleted_entries_and_empty_replies() -> None:
    assert _messages(None) == []
    assert _messages([]) == []
    reply = [["s", [("1-0", {"type": "t"}), ("2-0", None), ("3-0", {})]]]
    assert _messages(reply) == [Message("1-0", {"type": "t"})]


def test_a_batch_is_shared_evenly_among_the_concurrent_groups() -> None:
    assert group_size(64, 8) == 8
    assert group_size(3, 8) == 1  # a small batch: a transaction per message, all concurrent
    assert group_size(5, 1) == 5
    assert group_size(10_000, 8) == 32  # bounded: locks and savepoints per transaction


def test_synthetic_event_id_is_stable_per_message() -> None:
    assert synthetic_event_id("1-0") == synthetic_event_id("1-0")
    assert synthetic_event_id("1-0") != synthetic_event_id("1-1")
    assert uuid.UUID(synthetic_event_id("1-0")).version == 5


# -- against Postgres and Redis ----------------------------------------------------------------


async def test_event_without_event_id_dedupes_on_its_stream_id(harness: Harness) -> None:
    item_ids = await harness.b.insert_items(2)
    message_ids = await harness.publish(item_ids, with_event_id=False)
    consumer = harness.consumer()
    await consumer.start()
    await eventually(lambda: harness.b.done(2), "processed", 15)
    expected = {synthetic_event_id(mid): mid for mid in message_ids}
    assert await harness.b.processed_ids() == expected


async def test_failed_effect_rolls_back_its_event_row_and_is_not_acked(harness: Harness) -> None:
    (item_id,) = await harness.b.insert_items(1)
    attempts: list[int] = []

    async def half_done(connection: Connection, payload: dict[str, Any]) -> None:
        await on_item_created(connection, payload)  # the effect happened in the transaction...
        attempts.append(payload["item_id"])
        raise RuntimeError("...and then the handler failed")

    await harness.publish([item_id])
    consumer = harness.consumer(half_done, CONSUMER_MAX_DELIVERIES="1000")
    await consumer.start()

    async def tried_twice() -> bool:
        return len(attempts) >= 2

    await eventually(tried_twice, "redelivered", 15)
    await stop(consumer)
    assert await harness.b.processed() == 0  # rolled back with the effect
    assert await harness.b.unprocessed_items() == 1
    assert await harness.b.pending() == 1  # not acked: redelivered (and retried) later
    assert await harness.b.dead_letters() == []


async def test_transient_failures_never_dead_letter(harness: Harness) -> None:
    (item_id,) = await harness.b.insert_items(1)
    attempts: list[int] = []

    async def flaky(connection: Connection, payload: dict[str, Any]) -> None:
        attempts.append(payload["item_id"])
        if len(attempts) <= 4:  # more failures than CONSUMER_MAX_DELIVERIES (3)
            raise ConnectionResetError("database went away")
        await on_item_created(connection, payload)

    await harness.publish([item_id])
    consumer = harness.consumer(flaky)
    await consumer.start()
    await eventually(lambda: harness.b.done(1), "processed after the outage", 20)
    assert attempts == [item_id] * 5
    assert await harness.b.dead_letters() == []
    assert consumer.dead_lettered == 0


async def test_close_listeners_cuts_a_blocked_read_short(harness: Harness) -> None:
    consumer = harness.consumer(CONSUMER_BLOCK_MS="4000")
    await consumer.start()

    async def blocked_in_read() -> bool:
        return consumer._blocked_read is not None

    await eventually(blocked_in_read, "inside the 4 s XREADGROUP BLOCK", 10)
    began = time.monotonic()
    await consumer.close_listeners()
    # Published before drain and stop_tasks: a consumer still blocked in its read (or reading
    # again) would take this event and handle it before stop_tasks returns.
    (item_id,) = await harness.b.insert_items(1)
    await harness.publish([item_id])
    await asyncio.wait_for(consumer.drain(), 10)
    await asyncio.wait_for(consumer.stop_tasks(), 10)
    assert time.monotonic() - began < 1.5  # not the rest of the BLOCK
    assert consumer.outcomes == Counter()
    assert await harness.b.processed() == 0
    assert len(await harness.b.stream_events()) == 1
    # Unread, or delivered to the read's connection as it closed: then left pending, unhandled.
    assert await harness.b.pending() <= 1


async def test_no_read_starts_after_close_listeners_during_a_claim(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: stopping while the loop claims (XAUTOCLAIM) used to let it go on to its
    XREADGROUP and take new messages after "stop reading"."""
    client = harness.redis.client
    claim = client.xautoclaim
    claiming, release = asyncio.Event(), asyncio.Event()

    async def held_claim(*args: Any, **kwargs: Any) -> Any:
        claiming.set()
        await release.wait()
        return await claim(*args, **kwargs)

    monkeypatch.setattr(client, "xautoclaim", held_claim)
    consumer = harness.consumer()
    await consumer.start()
    await asyncio.wait_for(claiming.wait(), 10)
    await consumer.close_listeners()  # the loop is inside the claim step
    (item_id,) = await harness.b.insert_items(1)
    await harness.publish([item_id])
    release.set()
    await asyncio.wait_for(consumer.drain(), 10)
    await asyncio.wait_for(consumer.stop_tasks(), 10)  # the loop has ended: it read or it did not
    assert await harness.b.pending() == 0  # never delivered to this consumer
    assert await harness.b.processed() == 0
    assert consumer.outcomes == Counter()


async def test_the_request_id_of_an_event_is_on_its_effect_log_lines(harness: Harness) -> None:
    """From the entry's headers (outbox.enqueue); from the payload for events written before."""
    b = harness.b
    new_style, old_style = await b.insert_items(2)
    seen: dict[int, object] = {}

    async def recording(connection: Connection, payload: dict[str, Any]) -> None:
        seen[payload["item_id"]] = structlog.contextvars.get_contextvars().get("request_id")
        await on_item_created(connection, payload)

    await b.xadd_all(
        [
            {
                "type": ITEM_CREATED,
                "event_id": str(uuid.uuid4()),
                "payload": json.dumps({"item_id": new_style}),
                "headers": json.dumps({"request_id": "rid-headers"}),
            },
            {
                "type": ITEM_CREATED,
                "event_id": str(uuid.uuid4()),
                "payload": json.dumps({"item_id": old_style, "request_id": "rid-payload"}),
            },
        ]
    )
    consumer = harness.consumer(recording)
    await consumer.start()
    await eventually(lambda: b.done(2), "processed", 15)
    assert seen == {new_style: "rid-headers", old_style: "rid-payload"}


async def test_batch_in_hand_finishes_and_is_acked_across_shutdown(harness: Harness) -> None:
    item_ids = await harness.b.insert_items(5)
    entered: list[int] = []
    release = asyncio.Event()

    async def slow(connection: Connection, payload: dict[str, Any]) -> None:
        entered.append(payload["item_id"])
        await release.wait()
        await on_item_created(connection, payload)

    await harness.publish(item_ids)
    consumer = harness.consumer(slow)
    await consumer.start()

    async def all_entered() -> bool:
        return len(entered) == 5

    await eventually(all_entered, "batch in hand", 10)
    await consumer.close_listeners()  # must not cancel the handlers
    asyncio.get_running_loop().call_later(0.3, release.set)
    began = time.monotonic()
    await asyncio.wait_for(consumer.drain(), 10)
    assert time.monotonic() - began >= 0.25  # drain waited for the batch
    await asyncio.wait_for(consumer.stop_tasks(), 10)
    assert consumer.unfinished() == []
    assert await harness.b.done(5)
    assert consumer.processed == 5


async def test_claimed_messages_count_their_own_deliveries(harness: Harness) -> None:
    """XAUTOCLAIMed messages are dead-lettered on their own delivery count, even when another
    pending entry of this consumer lies between them in the stream."""
    item_ids = await harness.b.insert_items(3)
    first, middle, last = await harness.publish(item_ids)
    b = harness.b
    await b.redis.xgroup_create(b.stream, b.group, id="0")
    # A dead pod read all three; this pod took the middle one over a moment ago (not idle).
    await b.redis.xreadgroup(b.group, "dead-pod", {b.stream: ">"}, count=3)
    await asyncio.sleep(0.4)
    consumer_name = harness.env["CONSUMER_NAME"]
    await b.redis.xclaim(b.stream, b.group, consumer_name, 0, [middle])

    async def broken(connection: Connection, payload: dict[str, Any]) -> None:
        raise RuntimeError("poison")

    # Delivered twice once claimed: at CONSUMER_MAX_DELIVERIES=2 that is the last attempt.
    consumer = harness.consumer(broken, CONSUMER_MAX_DELIVERIES="2", CONSUMER_CLAIM_IDLE_MS="300")
    await consumer._claim_abandoned(b.redis)
    dead = {fields["original_id"]: fields["deliveries"] for _, fields in await b.dead_letters()}
    assert dead == {first: "2", last: "2"}
    assert set(await b.stream_events()) == {first, middle, last}


async def test_failed_dead_lettering_leaves_the_message_pending(harness: Harness) -> None:
    """The copy and the ack are one step: if the copy fails (the dead-letter key is not a
    stream), the message is not acked, the consumer carries on, and a later try succeeds."""
    b = harness.b
    await b.redis.set(b.dead, "not a stream")
    poison, _ = await harness.publish([10**12, *await b.insert_items(1)])
    consumer = harness.consumer(CONSUMER_MAX_DELIVERIES="1")
    await consumer.start()

    async def good_processed() -> bool:
        return await b.processed() == 1

    await eventually(good_processed, "the good event processed", 10)
    await asyncio.sleep(0.5)  # a few more dead-letter attempts, all failing
    entries = await b.redis.xpending_range(b.stream, b.group, min="-", max="+", count=10)
    assert [entry["message_id"] for entry in entries] == [poison]
    (item_id,) = await b.insert_items(1)
    await harness.publish([item_id])  # still consuming

    async def both_processed() -> bool:
        return await b.processed() == 2

    await eventually(both_processed, "a later event processed", 10)

    await b.redis.delete(b.dead)  # fixed: the next claim moves it

    await eventually(lambda: b.dead_lettered_and_settled(1), "dead-lettered", 10)
    ((_, entry),) = await b.dead_letters()
    assert entry["original_id"] == poison
    assert "unknown item" in entry["error"]


# -- group commits ---------------------------------------------------------------------------------


async def _xmins(harness: Harness) -> set[str]:
    """The transactions that inserted the processed_events rows."""
    rows = await harness.b.db.fetch("SELECT xmin::text AS xmin FROM processed_events")
    return {str(row["xmin"]) for row in rows}


async def test_failing_message_in_a_group_rolls_back_alone(harness: Harness) -> None:
    """Five messages, one group. The middle one fails on every delivery: the group's first try
    (no savepoints) rolls back, the second (a savepoint each) runs the other four, which commit
    together, once, are acked after the COMMIT and never applied again; the poison stays
    pending, is redelivered alone and finally dead-lettered."""
    b = harness.b
    item_ids = await b.insert_items(5)
    poison_item = item_ids[2]
    calls: Counter[int] = Counter()

    async def fails_in_the_middle(connection: Connection, payload: dict[str, Any]) -> None:
        calls[payload["item_id"]] += 1
        await on_item_created(connection, payload)  # the effect happened...
        if payload["item_id"] == poison_item:
            raise RuntimeError("poison in the middle")  # ...and is rolled back

    message_ids = await harness.publish(item_ids)
    consumer = harness.consumer(
        fails_in_the_middle, CONSUMER_CONCURRENCY="1", CONSUMER_MAX_DELIVERIES="3"
    )
    await consumer.start()

    await eventually(
        lambda: b.dead_lettered_and_settled(1), "poison dead-lettered, nothing pending", 20
    )
    await stop(consumer)
    poison = message_ids[2]
    neighbours = [mid for mid in message_ids if mid != poison]
    assert sorted((await b.processed_ids()).values()) == sorted(neighbours)
    assert len(await _xmins(harness)) == 1  # one transaction for the four
    assert await b.unprocessed_items() == 1  # the poison's item only
    # The two before the poison ran in the rolled-back first try too; the poison once per delivery.
    assert calls == Counter(
        {item_ids[0]: 2, item_ids[1]: 2, poison_item: 3, **{i: 1 for i in item_ids[3:]}}
    )
    ((_, entry),) = await b.dead_letters()
    assert (entry["original_id"], entry["deliveries"]) == (poison, "3")
    assert "poison in the middle" in entry["error"]
    assert await b.acked_without_effect() == [poison]
    assert (consumer.processed, consumer.dead_lettered) == (4, 1)


async def test_second_failure_in_a_group_rolls_back_to_its_savepoint(harness: Harness) -> None:
    """Six messages in one group: two poisons, and a second copy of the first poison. The first
    try rolls back at the first poison; the second (a savepoint each) rolls back the second
    poison alone and leaves the copy pending (its event has just failed). The three others
    commit together on their first delivery; what failed stays pending, unacked."""
    b = harness.b
    item_ids = await b.insert_items(5)
    poisons = {item_ids[1], item_ids[3]}
    events = [
        {"type": ITEM_CREATED, "event_id": str(uuid.uuid4()), "payload": json.dumps({"item_id": i})}
        for i in item_ids
    ]
    message_ids = await b.xadd_all([*events[:4], events[1], events[4]])
    calls: Counter[int] = Counter()

    async def two_poisons(connection: Connection, payload: dict[str, Any]) -> None:
        calls[payload["item_id"]] += 1
        await on_item_created(connection, payload)
        if payload["item_id"] in poisons:
            raise RuntimeError(f"poison {payload['item_id']}")

    consumer = harness.consumer(
        two_poisons,
        CONSUMER_CONCURRENCY="1",
        CONSUMER_MAX_DELIVERIES="1000",
        CONSUMER_CLAIM_IDLE_MS="600000",  # no redelivery during the test
    )
    await consumer.start()

    async def first_delivery_settled() -> bool:
        return consumer.outcomes == Counter(processed=3, failed=3)

    await eventually(first_delivery_settled, "3 processed and 3 failed", 15)
    await stop(consumer)
    assert sorted((await b.processed_ids()).values()) == sorted(
        message_ids[index] for index in (0, 2, 5)
    )
    assert len(await _xmins(harness)) == 1  # the three in one transaction
    assert await b.unprocessed_items() == 2  # the poisons' effects rolled back
    assert await b.pending() == 3
    assert await b.acked_without_effect() == []
    # The first one ran in both tries; the first poison's copy never ran.
    assert calls == Counter(
        {item_ids[0]: 2, item_ids[1]: 1, item_ids[2]: 1, item_ids[3]: 1, item_ids[4]: 1}
    )


async def test_event_delivered_twice_in_one_group_takes_effect_once(harness: Harness) -> None:
    b = harness.b
    twice, once = await b.insert_items(2)
    event = {
        "type": ITEM_CREATED,
        "event_id": str(uuid.uuid4()),
        "payload": json.dumps({"item_id": twice}),
    }
    other = {
        "type": ITEM_CREATED,
        "event_id": str(uuid.uuid4()),
        "payload": json.dumps({"item_id": once}),
    }
    first, _, _ = await b.xadd_all([event, other, event])
    calls: Counter[int] = Counter()

    async def counting(connection: Connection, payload: dict[str, Any]) -> None:
        calls[payload["item_id"]] += 1
        await on_item_created(connection, payload)

    consumer = harness.consumer(counting, CONSUMER_CONCURRENCY="1")
    await consumer.start()
    await eventually(lambda: b.done(2), "processed", 15)
    assert calls == Counter({twice: 1, once: 1})
    assert (await b.processed_ids())[event["event_id"]] == first
    assert consumer.processed == 3  # both copies acked


async def test_group_failing_at_commit_retries_one_message_per_transaction(
    harness: Harness,
) -> None:
    """A failure no savepoint can catch (a deferred constraint, checked at COMMIT) costs the
    group its transaction; each message then gets a transaction of its own: the culprit fails
    alone (and is finally dead-lettered), the others commit."""
    b = harness.b
    item_ids = await b.insert_items(4)
    culprit = item_ids[1]

    async def breaks_the_commit(connection: Connection, payload: dict[str, Any]) -> None:
        await on_item_created(connection, payload)
        if payload["item_id"] == culprit:
            await connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS deferred_check"
                " (id int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP"
            )
            await connection.execute("INSERT INTO deferred_check VALUES (1), (1)")

    message_ids = await harness.publish(item_ids)
    consumer = harness.consumer(
        breaks_the_commit, CONSUMER_CONCURRENCY="1", CONSUMER_MAX_DELIVERIES="2"
    )
    await consumer.start()

    await eventually(
        lambda: b.dead_lettered_and_settled(1), "culprit dead-lettered, nothing pending", 20
    )
    await stop(consumer)
    others = [mid for index, mid in enumerate(message_ids) if index != 1]
    assert sorted((await b.processed_ids()).values()) == sorted(others)
    assert len(await _xmins(harness)) == 3  # a transaction each, after the group's failed
    assert await b.unprocessed_items() == 1
    ((_, entry),) = await b.dead_letters()
    assert entry["original_id"] == message_ids[1]
    assert "UniqueViolation" in entry["error"]
    assert (consumer.processed, consumer.dead_lettered) == (3, 1)


# -- group effects -------------------------------------------------------------------------------


@dataclass
class RecordedEffects:
    """The items example's effects, recording each call: group sizes, single events' items."""

    group_sizes: list[int] = field(default_factory=list)
    one_by_one: list[int] = field(default_factory=list)

    async def grouped(self, connection: Connection, payloads: list[dict[str, Any]]) -> None:
        self.group_sizes.append(len(payloads))
        await on_items_created(connection, payloads)

    async def single(self, connection: Connection, payload: dict[str, Any]) -> None:
        self.one_by_one.append(payload["item_id"])
        await on_item_created(connection, payload)


async def test_a_group_effect_applies_a_group_in_one_call(harness: Harness) -> None:
    item_ids = await harness.b.insert_items(40)
    effects = RecordedEffects()
    await harness.publish(item_ids)
    consumer = harness.consumer(effects.single, effects.grouped, CONSUMER_CONCURRENCY="2")
    await consumer.start()
    await eventually(lambda: harness.b.done(40), "processed", 15)
    assert sum(effects.group_sizes) == 40
    assert max(effects.group_sizes) > 1  # several events per call
    assert effects.one_by_one == []
    assert await harness.b.dead_letters() == []
    assert await harness.b.acked_without_effect() == []


async def test_a_failed_group_effect_runs_the_group_again_one_event_at_a_time(
    harness: Harness,
) -> None:
    """One event names no item: the group effect fails, the group runs again through the single
    handler, which commits the others and fails (here: dead-letters) only that one."""
    item_ids = await harness.b.insert_items(7)
    effects = RecordedEffects()
    missing = max(item_ids) + 1_000_000
    await harness.publish([*item_ids[:3], missing, *item_ids[3:]])
    consumer = harness.consumer(
        effects.single, effects.grouped, CONSUMER_CONCURRENCY="1", CONSUMER_MAX_DELIVERIES="1"
    )
    await consumer.start()

    async def settled() -> bool:
        return await harness.b.dead_lettered_and_settled(1) and await harness.b.processed() == 7

    await eventually(settled, "the others processed, the bad one dead-lettered", 15)
    assert await harness.b.unprocessed_items() == 0
    assert effects.group_sizes  # tried as a group first...
    assert missing in effects.one_by_one  # ...then one event at a time
    [(_, dead)] = await harness.b.dead_letters()
    assert json.loads(dead["payload"])["item_id"] == missing
    # The only message acked without its effect is the one dead-lettered.
    assert await harness.b.acked_without_effect() == [dead["original_id"]]


async def test_a_transient_failure_of_a_group_effect_leaves_the_group_pending(
    harness: Harness,
) -> None:
    item_ids = await harness.b.insert_items(4)
    attempts: list[int] = []

    async def flaky(connection: Connection, payloads: list[dict[str, Any]]) -> None:
        attempts.append(len(payloads))
        if len(attempts) <= 4:  # more failures than CONSUMER_MAX_DELIVERIES (3)
            raise ConnectionResetError("database went away")
        await on_items_created(connection, payloads)

    await harness.publish(item_ids)
    consumer = harness.consumer(on_item_created, flaky, CONSUMER_CONCURRENCY="1")
    await consumer.start()
    await eventually(lambda: harness.b.done(4), "processed after the outage", 20)
    assert await harness.b.dead_letters() == []
    assert consumer.dead_lettered == 0
