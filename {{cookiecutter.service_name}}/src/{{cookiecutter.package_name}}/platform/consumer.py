"""A Redis Streams consumer-group worker with exactly-once effects in Postgres: the stream runtime.

Delivery is at-least-once; effects are exactly-once because each event's id is inserted into
`processed_events` in the same transaction as its effect (group_commit.py), and XACK follows the
COMMIT. This module is the Redis side: reading, claiming, acking and dead-lettering. On start
the worker re-reads its own pending entries (same consumer name across restarts, e.g. the pod's
hostname), then regularly XAUTOCLAIMs entries idle too long in dead consumers. After
CONSUMER_MAX_DELIVERIES failed deliveries a message moves to the dead-letter stream, with the
error, in one Lua script together with its XACK.

A batch is split into at most CONSUMER_CONCURRENCY groups handled concurrently, each in one
transaction (see group_commit.py). A failed message is retried (left pending) or dead-lettered;
its neighbours commit. Once the batch's groups are done, one XACK acknowledges the messages
whose effects committed: the ack is paid once per batch instead of once per message.

Shutdown: stop reading (every read and claim checks first; a blocked XREADGROUP is the only
thing ever cancelled early), finish the messages in hand, ack only what committed; whatever was
not acked stays pending for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Mapping
from typing import Any

import redis.asyncio as redis
from prometheus_client import Counter as CounterMetric
from prometheus_client import Gauge
from pydantic import Field
from redis.exceptions import ResponseError
from typing_extensions import override

from .assembly import Assembly, Feature
from .db import PostgresPool
from .dependency import DependencyUnavailableError
from .event_context import EventContext
from .group_commit import (
    TRANSIENT_ERRORS,
    EffectHandler,
    Failure,
    GroupCommit,
    GroupEffectHandler,
    Message,
    group_size,
)
from .inflight import InFlight
from .lifecycle import Component
from .logs import log
from .metrics import refresh_at_scrape
from .outbox import OutboxSettings
from .redis_client import RedisClient, RedisSettings
from .settings import Config, Settings, SettingsGroup

CONSUMER_MESSAGES = CounterMetric(
    "consumer_messages",
    "Stream messages handled: processed (effect committed, acked), failed (left pending, to be "
    "redelivered), dead_lettered (moved to the dead-letter stream, acked).",
    ["outcome"],
)
CONSUMER_PENDING = Gauge(
    "consumer_pending_messages",
    "Messages delivered to the consumer group and not acknowledged yet (XINFO GROUPS pending).",
)
CONSUMER_LAG = Gauge(
    "consumer_lag_messages",
    "Messages in the stream not yet delivered to the consumer group (XINFO GROUPS lag).",
)

__all__ = ["EffectHandler", "GroupEffectHandler", "Message", "StreamConsumer"]

DEAD_LETTER_SCRIPT = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""
"""Unlike MULTI/EXEC, which runs the XACK even when the XADD fails (WRONGTYPE, say), a script
stops at the failing XADD: a message is never acked without its dead-letter copy."""


class ConsumerSettings(SettingsGroup):
    """The consumer group, how much it takes at once, and where messages that keep failing go."""

    consumer_group: str = Field(
        default="{{ cookiecutter.service_name }}",
        min_length=1,
    )
    consumer_name: str = Field(default_factory=socket.gethostname, min_length=1)
    consumer_concurrency: int = Field(default=8, ge=1, le=1024)
    consumer_batch_size: int = Field(default=256, ge=1, le=10_000)
    consumer_block_ms: int = Field(default=2000, ge=1)
    consumer_claim_idle_ms: int = Field(default=30_000, ge=1)
    consumer_max_deliveries: int = Field(default=5, ge=1)
    dead_letter_stream: str = Field(
        default="{{ cookiecutter.service_name }}.events.dead",
        min_length=1,
    )

    @override
    def check_with(self, config: Config) -> list[str]:
        socket_timeout = config[RedisSettings].redis_socket_timeout
        if self.consumer_block_ms / 1000 < socket_timeout:
            return []
        return [
            f"CONSUMER_BLOCK_MS ({self.consumer_block_ms}) must stay below "
            f"REDIS_SOCKET_TIMEOUT ({socket_timeout} s)"
        ]


class StreamConsumer(Component):
    """Consumes the events stream (EVENTS_STREAM) in its consumer group: `handlers` are the
    effects by event type (and `group_handlers` their optional batched forms, see
    group_commit.py); `events` is the trace context's way in (tracing.events), if any."""

    name = "consumer"

    def __init__(
        self,
        db: PostgresPool,
        redis_client: RedisClient,
        settings: Settings,
        consumer: ConsumerSettings,
        outbox: OutboxSettings,
        handlers: Mapping[str, EffectHandler],
        events: EventContext | None = None,
        group_handlers: Mapping[str, GroupEffectHandler] | None = None,
    ) -> None:
        self._db = db
        self._redis = redis_client
        self._settings = settings
        self._config = consumer
        self._stream = outbox.events_stream
        self._group = consumer.consumer_group
        self._consumer = consumer.consumer_name
        self._group_commit = GroupCommit(db, self._stream, handlers, events, group_handlers)
        self._in_flight = InFlight()
        self._slots = asyncio.Semaphore(consumer.consumer_concurrency)
        self._stopped_reading = asyncio.Event()
        self._blocked_read: asyncio.Future[Any] | None = None
        """The XREADGROUP ... BLOCK in progress, if any: what stopping cancels."""
        self._loop_task: asyncio.Task[None] | None = None
        self.outcomes: Counter[str] = Counter()
        """Messages by outcome: processed, failed, dead_lettered, cancelled (at the deadline)."""
        self._outcomes_at_close: Counter[str] = Counter()
        self._in_hand = 0
        """Messages of the groups being handled."""
        self._in_flight_at_close = 0
        self._outcome_counters = {
            outcome: CONSUMER_MESSAGES.labels(outcome)
            for outcome in ("processed", "failed", "dead_lettered")
        }

    @property
    def processed(self) -> int:
        return self.outcomes["processed"]

    @property
    def dead_lettered(self) -> int:
        return self.outcomes["dead_lettered"]

    @property
    def _reading(self) -> bool:
        """False from `close_listeners` on: no read or claim starts any more."""
        return not self._stopped_reading.is_set()

    def _count(self, outcome: str, messages: int = 1) -> None:
        self.outcomes[outcome] += messages
        if outcome != "cancelled":
            self._outcome_counters[outcome].inc(messages)

    async def _refresh_backlog(self) -> None:
        """Pending and lag of our group, from one XINFO GROUPS (for the metrics scrape)."""
        try:
            groups = await self._redis.client.xinfo_groups(self._stream)
        except DependencyUnavailableError:
            return
        except ResponseError as error:
            if "no such key" in str(error):
                return  # the stream does not exist yet
            raise
        for group in groups:
            if group["name"] == self._group:
                CONSUMER_PENDING.set(int(group["pending"]))
                CONSUMER_LAG.set(int(group.get("lag") or 0))

    @override
    async def start(self) -> None:
        refresh_at_scrape(self._refresh_backlog)
        self._loop_task = self.spawn(self._run(), "loop")

    # -- the loop: every read and claim starts only while reading ------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        recovered = False
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        while self._reading:
            try:
                client = self._redis.client
                self._db.ensure_available()
                if not recovered:  # our own pending entries first: they were ours when we died
                    await self._ensure_group(client)
                    await self._process_own_pending(client)
                    recovered = True
                if loop.time() >= next_claim:
                    await self._claim_abandoned(client)
                    next_claim = loop.time() + self._config.consumer_claim_idle_ms / 2000
                await self._process(await self._read_new(client), fresh=True)
                backoff = 0.1
            except DependencyUnavailableError:
                await self._pause(0.1)  # still connecting
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                log.warning("consumer_group_missing", stream=self._stream, group=self._group)
                recovered = False  # the stream or group vanished (Redis lost data): recreate
            except TRANSIENT_ERRORS as error:
                reason = str(error) or repr(error)
                log.warning("consumer_backing_off", error=reason, retry_in_s=backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, self._settings.dependency_max_backoff)
        log.info("consumer_stopped", processed=self.processed, dead_lettered=self.dead_lettered)

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless reading stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped_reading.wait(), seconds)

    async def _ensure_group(self, client: redis.Redis) -> None:
        try:
            await client.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _read_new(self, client: redis.Redis) -> list[Message]:
        """Block for new messages (none once reading stopped). The read runs as a task of its
        own, the one thing stopping cancels: anything it was about to deliver stays pending
        for this consumer."""
        if not self._reading:
            return []
        read = asyncio.ensure_future(
            client.xreadgroup(
                self._group,
                self._consumer,
                {self._stream: ">"},
                count=self._config.consumer_batch_size,
                block=self._config.consumer_block_ms,
            )
        )
        self._blocked_read = read
        try:
            await asyncio.wait((read,))
        finally:
            self._blocked_read = None
            read.cancel()  # a no-op once done; if the loop itself is cancelled, the read too
        if read.cancelled():  # by close_listeners: reading stopped
            return []
        return _messages(read.result())

    async def _process_own_pending(self, client: redis.Redis) -> None:
        last_id = "0"
        while self._reading:
            reply = await client.xreadgroup(
                self._group,
                self._consumer,
                {self._stream: last_id},
                count=self._config.consumer_batch_size,
            )
            messages = _messages(reply)
            if not messages:
                return
            log.info("consumer_recovering_pending", count=len(messages))
            await self._process(messages, fresh=False)
            last_id = messages[-1].id

    async def _claim_abandoned(self, client: redis.Redis) -> None:
        start = "0-0"
        while self._reading:
            reply = await client.xautoclaim(
                self._stream,
                self._group,
                self._consumer,
                min_idle_time=self._config.consumer_claim_idle_ms,
                start_id=start,
                count=self._config.consumer_batch_size,
            )
            start = reply[0]
            claimed = [Message(str(mid), dict(fields)) for mid, fields in reply[1] if fields]
            if claimed:
                log.info("consumer_claimed", count=len(claimed))
                await self._process(claimed, fresh=False)
            if start == "0-0":
                return

    # -- one batch -------------------------------------------------------------------------------

    async def _process(self, messages: list[Message], *, fresh: bool) -> None:
        """Handle a batch in concurrent groups (see the module's docstring); waits for all of
        it (never abandons it)."""
        if not messages:
            return
        deliveries = {m.id: 1 for m in messages} if fresh else await self._deliveries(messages)
        size = group_size(len(messages), self._config.consumer_concurrency)
        committed = await asyncio.gather(
            *(
                self._handle_group(messages[start : start + size], deliveries)
                for start in range(0, len(messages), size)
            )
        )
        if acks := [message_id for group in committed for message_id in group]:
            await self._ack(acks)

    async def _deliveries(self, messages: list[Message]) -> dict[str, int]:
        # One XPENDING per id (pipelined): a single range query with COUNT len(messages) can
        # return other pending entries of ours lying in between instead, under-counting these.
        async with self._redis.client.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.xpending_range(
                    self._stream,
                    self._group,
                    min=message.id,
                    max=message.id,
                    count=1,
                    consumername=self._consumer,
                )
            replies = await pipe.execute()
        return {
            str(entry["message_id"]): int(entry["times_delivered"])
            for entries in replies
            for entry in entries
        }

    async def _handle_group(self, group: list[Message], deliveries: Mapping[str, int]) -> list[str]:
        """One group of a batch: its transaction, then each failed message retried later (left
        pending) or dead-lettered. Returns the ids to ack: those whose effects committed."""
        async with self._slots:
            self._in_hand += len(group)
            try:
                with self._in_flight.track(f"consume {group[0].event_type or '?'} {group[0].id}"):
                    outcome = await self._group_commit.commit(group)
                    for failure in outcome.failed:
                        if failure.permanent:
                            await self._retry_or_dead_letter(failure, deliveries)
                        else:
                            self._count("failed")  # stays pending, never dead-lettered for this
                    return outcome.committed
            except asyncio.CancelledError:
                self._count("cancelled", len(group))  # at the shutdown deadline: stays pending
                raise
            finally:
                self._in_hand -= len(group)

    async def _ack(self, message_ids: list[str]) -> None:
        """One XACK for the messages of a batch whose effects committed."""
        try:
            await self._redis.client.xack(self._stream, self._group, *message_ids)
        except TRANSIENT_ERRORS as error:
            # Stays pending: redelivered, the effect is then a no-op and only the ack is
            # repeated.
            log.warning(
                "consume_failed_transient",
                messages=len(message_ids),
                error=str(error) or repr(error),
            )
            self._count("failed", len(message_ids))
        else:
            self._count("processed", len(message_ids))

    async def _retry_or_dead_letter(self, failure: Failure, deliveries: Mapping[str, int]) -> None:
        """A message that failed for a reason of its own: left pending (delivered again after
        CONSUMER_CLAIM_IDLE_MS) until its last delivery, then dead-lettered."""
        message_id, error = failure.message.id, failure.error
        delivered = deliveries.get(message_id, 1)
        if delivered < self._config.consumer_max_deliveries:
            log.warning(
                "consume_failed", message_id=message_id, deliveries=delivered, error=repr(error)
            )
            self._count("failed")
            return
        try:
            await self._dead_letter(failure, delivered)
        except (*TRANSIENT_ERRORS, ResponseError) as problem:
            # Stays pending, retried at its next claim: never stops the consumer.
            log.warning(
                "dead_letter_failed", message_id=message_id, error=str(problem) or repr(problem)
            )
            self._count("failed")

    async def _dead_letter(self, failure: Failure, deliveries: int) -> None:
        """Copy to the dead-letter stream and ack, atomically (one script)."""
        message_id, error = failure.message.id, failure.error
        entry = {
            **failure.message.fields,
            "original_id": message_id,
            "original_stream": self._stream,
            "error": repr(error)[:2000],
            "deliveries": str(deliveries),
        }
        await self._redis.client.eval(
            DEAD_LETTER_SCRIPT,
            2,
            self._stream,
            self._config.dead_letter_stream,
            self._group,
            message_id,
            *(part for pair in entry.items() for part in pair),
        )
        self._count("dead_lettered")
        log.error(
            "consume_dead_lettered",
            message_id=message_id,
            deliveries=deliveries,
            error=repr(error),
        )

    # -- shutdown --------------------------------------------------------------------------------

    def _stop_reading(self) -> None:
        """No read or claim starts from now on; a blocked XREADGROUP is cancelled."""
        self._stopped_reading.set()
        if self._blocked_read is not None:
            self._blocked_read.cancel()

    @override
    async def close_listeners(self) -> None:
        """Stop reading. A blocked XREADGROUP is cancelled (anything it was about to deliver
        stays pending for this consumer); a read or claim under way finishes, but the loop
        starts no other; a batch being processed is never interrupted."""
        self._outcomes_at_close = self.outcomes.copy()
        self._in_flight_at_close = self._in_hand
        read = self._blocked_read
        self._stop_reading()
        if read is not None:
            await asyncio.wait((read,))  # over (its connection closed) once this returns

    @override
    async def drain(self) -> None:
        await self._in_flight.wait_idle()

    @override
    async def stop_tasks(self) -> None:
        self._stop_reading()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        return self._in_flight.tasks()

    @override
    def shutdown_report(self) -> dict[str, int]:
        since = self.outcomes - self._outcomes_at_close
        return {
            "messages_in_flight_at_close": self._in_flight_at_close,
            "messages_finished": since["processed"] + since["dead_lettered"],
            "messages_left_pending": since["failed"] + since["cancelled"],
        }


def _messages(reply: Any) -> list[Message]:
    """XREADGROUP's reply as messages, skipping entries deleted from the stream."""
    if not reply:
        return []
    entries = reply[0][1]  # [[stream, [(id, fields), ...]]]
    return [Message(str(mid), dict(fields)) for mid, fields in entries if fields]


def consumer_feature(
    handlers: Mapping[str, EffectHandler],
    group_handlers: Mapping[str, GroupEffectHandler] | None = None,
) -> Feature:
    """The consumer of the events stream: `handlers` are the effects by event type (and
    `group_handlers` their optional batched forms). Uses the data option's pools."""

    def wire(assembly: Assembly) -> None:
        config = assembly.config
        consumer = StreamConsumer(
            assembly[PostgresPool],
            assembly[RedisClient],
            assembly.settings,
            config[ConsumerSettings],
            config[OutboxSettings],
            handlers,
            assembly.events,
            group_handlers=group_handlers,
        )
        assembly.workers.append(consumer)

    return Feature("consumer", wire=wire, settings=(ConsumerSettings,))
