"""A Redis Streams consumer-group worker with exactly-once effects in Postgres.

Delivery is at-least-once; effects are exactly-once because each event's id is inserted into
`processed_events` in the same transaction as its effect, and XACK follows the COMMIT. On start
the worker re-reads its own pending entries (same consumer name across restarts, e.g. the pod's
hostname), then regularly XAUTOCLAIMs entries idle too long in dead consumers. After
CONSUMER_MAX_DELIVERIES failed deliveries a message moves to the dead-letter stream, with the
error, in one Lua script together with its XACK.

Group commits: a batch is split into at most CONSUMER_CONCURRENCY groups handled concurrently.
A group is one transaction: one statement inserts the `processed_events` rows of all its events,
then their effects run one after another. Failures are rare, so the first try takes no
savepoints (they would cost a round trip per message): if an effect fails, the transaction rolls
back and the group runs again without that message, this time with a SAVEPOINT per effect, so
that a further failure rolls back its own message only (its row is deleted before the COMMIT).
A failed message is retried (left pending) or dead-lettered; its neighbours commit. Once the
batch's groups are done, one XACK acknowledges the messages whose effects committed. The commit
(its WAL flush) and the dedupe insert are paid once per group, the ack once per batch, instead
of once per message.

Shutdown: stop reading (a blocked XREADGROUP is the only thing ever cancelled early), finish the
messages in hand, ack only what committed; whatever was not acked stays pending for the next run.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import redis.asyncio as redis
import structlog
from redis.exceptions import ResponseError
from typing_extensions import override

from .db import Connection, PostgresPool
from .dependency import DependencyUnavailableError
from .inflight import InFlight
from .lifecycle import Component
from .logs import log
from .metrics import CONSUMER_LAG, CONSUMER_MESSAGES, CONSUMER_PENDING, refresh_at_scrape
from .outbox import EventContext, NoEventContext
from .redis_client import RedisClient
from .settings import Settings

EffectHandler = Callable[[Connection, dict[str, Any]], Awaitable[None]]
"""Applies one event's effect inside the consumer's transaction, which it shares with the other
events of its group: raise to roll the effect back. An effect can run twice for one delivery (its
first run rolled back with the group when a neighbour failed): only the run that commits counts,
so whatever it does outside the transaction must be idempotent, as delivery is at-least-once."""

GroupEffectHandler = Callable[[Connection, list[dict[str, Any]]], Awaitable[None]]
"""Optional, per event type: applies the effects of all the new events of that type in a group at
once (one statement for all of them, say), in the group's transaction. If it raises, the group
runs again one event at a time through the type's EffectHandler, which tells the failed event
from the others: it must do exactly what the EffectHandler does for each event. Not used with
tracing on (each event's effect gets a span of its own there)."""

Message = tuple[str, dict[str, str]]
_Failure = tuple[str, dict[str, str], Exception]
"""A message that failed: its id, its fields, its error."""
_Event = tuple[str, dict[str, str], uuid.UUID]
"""A message with its event id."""

MAX_GROUP = 32
"""Messages per transaction at most (a batch is shared among CONSUMER_CONCURRENCY groups):
bounds how long a transaction holds its locks, and keeps its savepoints (subtransactions) below
the 64 Postgres caches per transaction."""

CLAIM_EVENTS_SQL = (
    "INSERT INTO processed_events (event_id, message_id, event_type)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
"""The group's events into `processed_events` in one statement: those it returns are new (an
event processed before is a duplicate, its effect is skipped)."""

UNCLAIM_EVENTS_SQL = "DELETE FROM processed_events WHERE event_id = ANY($1::uuid[])"
"""The rows of the events whose effects failed (rolled back to their savepoints): they go too."""

TRANSIENT_ERRORS = (
    OSError,
    TimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    DependencyUnavailableError,
)
"""Infrastructure failures: never a reason to dead-letter a message."""

DEAD_LETTER_SCRIPT = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""
"""Unlike MULTI/EXEC, which runs the XACK even when the XADD fails (WRONGTYPE, say), a script
stops at the failing XADD: a message is never acked without its dead-letter copy."""


class _DuplicateOfFailedError(Exception):
    """An event delivered twice in one group whose first copy failed: this copy is left pending
    and handled again on its own (its first copy's failure is not its own)."""


class _GroupEffectFailedError(Exception):
    """Rolls back a group's first try when a GroupEffectHandler failed: which event failed is told
    by the second try, one event (and savepoint) at a time."""


class _EffectFailedError(Exception):
    """Rolls back a group's first try, which takes no savepoints, at its first failed effect."""

    def __init__(self, event: _Event, error: Exception) -> None:
        super().__init__(repr(error))
        self.event = event
        self.error = error


class StreamConsumer(Component):
    name = "consumer"

    def __init__(
        self,
        db: PostgresPool,
        redis_client: RedisClient,
        settings: Settings,
        handlers: Mapping[str, EffectHandler],
        events: EventContext | None = None,
        group_handlers: Mapping[str, GroupEffectHandler] | None = None,
    ) -> None:
        self._db = db
        self._events = events or NoEventContext()
        self._redis = redis_client
        self._settings = settings
        self._handlers = dict(handlers)
        # An event's span covers its own effect: with tracing, each effect runs on its own.
        self._group_handlers = dict(group_handlers or {}) if events is None else {}
        self._stream = settings.events_stream
        self._group = settings.consumer_group
        self._consumer = settings.consumer_name
        self._in_flight = InFlight()
        self._slots = asyncio.Semaphore(settings.consumer_concurrency)
        self._stopping = False
        self._waiting_for_messages = False
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

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        recovered = False
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                client = self._redis.client
                self._db.ensure_available()
                if not recovered:  # our own pending entries first: they were ours when we died
                    await self._ensure_group(client)
                    await self._process_own_pending(client)
                    recovered = True
                if loop.time() >= next_claim:
                    await self._claim_abandoned(client)
                    next_claim = loop.time() + self._settings.consumer_claim_idle_ms / 2000
                messages = await self._read_new(client)
                await self._process(messages, fresh=True)
                backoff = 0.1
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                _uncancel()  # our own cancel of a blocked read: stop quietly
            except DependencyUnavailableError:
                await asyncio.sleep(0.1)  # still connecting
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                log.warning("consumer_group_missing", stream=self._stream, group=self._group)
                recovered = False  # the stream or group vanished (Redis lost data): recreate
            except TRANSIENT_ERRORS as error:
                reason = str(error) or repr(error)
                log.warning("consumer_backing_off", error=reason, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.dependency_max_backoff)
        log.info("consumer_stopped", processed=self.processed, dead_lettered=self.dead_lettered)

    async def _ensure_group(self, client: redis.Redis) -> None:
        try:
            await client.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _read_new(self, client: redis.Redis) -> list[Message]:
        """Block for new messages; the only await that shutdown may cancel."""
        self._waiting_for_messages = True
        try:
            reply = await client.xreadgroup(
                self._group,
                self._consumer,
                {self._stream: ">"},
                count=self._settings.consumer_batch_size,
                block=self._settings.consumer_block_ms,
            )
        finally:
            self._waiting_for_messages = False
        return _messages(reply)

    async def _process_own_pending(self, client: redis.Redis) -> None:
        last_id = "0"
        while not self._stopping:
            reply = await client.xreadgroup(
                self._group,
                self._consumer,
                {self._stream: last_id},
                count=self._settings.consumer_batch_size,
            )
            messages = _messages(reply)
            if not messages:
                return
            log.info("consumer_recovering_pending", count=len(messages))
            await self._process(messages, fresh=False)
            last_id = messages[-1][0]

    async def _claim_abandoned(self, client: redis.Redis) -> None:
        start = "0-0"
        while not self._stopping:
            reply = await client.xautoclaim(
                self._stream,
                self._group,
                self._consumer,
                min_idle_time=self._settings.consumer_claim_idle_ms,
                start_id=start,
                count=self._settings.consumer_batch_size,
            )
            start, claimed = reply[0], [(mid, fields) for mid, fields in reply[1] if fields]
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
        deliveries = {mid: 1 for mid, _ in messages} if fresh else await self._deliveries(messages)
        size = _group_size(len(messages), self._settings.consumer_concurrency)
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
            for mid, _ in messages:
                pipe.xpending_range(
                    self._stream,
                    self._group,
                    min=mid,
                    max=mid,
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
            first_id, event_type = group[0][0], group[0][1].get("type", "?")
            self._in_hand += len(group)
            try:
                with self._in_flight.track(f"consume {event_type} {first_id}"):
                    return await self._commit(group, deliveries)
            except asyncio.CancelledError:
                self._count("cancelled", len(group))  # at the shutdown deadline: stays pending
                raise
            finally:
                self._in_hand -= len(group)

    async def _commit(self, group: list[Message], deliveries: Mapping[str, int]) -> list[str]:
        """The group's transaction, then the failed messages; the ids committed."""
        try:
            committed, failed = await self._commit_group(group)
        except TRANSIENT_ERRORS as error:
            # Nothing of the group committed: all of it stays pending, redelivered once the
            # dependencies are back (an effect that did commit is then a no-op).
            log.warning(
                "consume_failed_transient", messages=len(group), error=str(error) or repr(error)
            )
            self._count("failed", len(group))
            return []
        except Exception as error:
            if len(group) > 1:
                # Failed outside any message's savepoint (at COMMIT: a deferred constraint,
                # say): one transaction per message tells which message it was.
                log.warning("consume_group_failed", messages=len(group), error=repr(error))
                one_by_one: list[str] = []
                for message in group:
                    one_by_one += await self._commit([message], deliveries)
                return one_by_one
            [(message_id, fields)] = group
            committed, failed = [], [(message_id, fields, error)]
        for message_id, fields, failure in failed:
            if isinstance(failure, (*TRANSIENT_ERRORS, _DuplicateOfFailedError)):
                self._count("failed")  # stays pending, never dead-lettered for this
            else:
                deliveries_so_far = deliveries.get(message_id, 1)
                await self._retry_or_dead_letter(message_id, fields, failure, deliveries_so_far)
        return committed

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

    async def _commit_group(self, group: list[Message]) -> tuple[list[str], list[_Failure]]:
        """The group's transaction: the ids whose effects it committed (or had committed
        before: duplicates), and the messages that failed, with their errors."""
        failed: list[_Failure] = []
        events: list[_Event] = []
        for message_id, fields in group:
            try:
                events.append((message_id, fields, _event_id(message_id, fields)))
            except ValueError as error:  # not a UUID: no retry can fix it
                failed.append((message_id, fields, error))
        if not events:
            return [], failed
        try:
            committed, _ = await self._transaction(events, savepoints=False)
        except _GroupEffectFailedError:
            committed, failed_in_group = await self._transaction(events, savepoints=True)
            failed += failed_in_group
        except _EffectFailedError as first:
            # Rolled back at the first failure: again without it, a savepoint per message.
            failed.append((*first.event[:2], first.error))
            rest = [event for event in events if event is not first.event]
            committed, failed_in_rest = await self._transaction(
                rest, savepoints=True, failed_before=first.event[2]
            )
            failed += failed_in_rest
        return committed, failed

    async def _transaction(
        self,
        events: list[_Event],
        *,
        savepoints: bool,
        failed_before: uuid.UUID | None = None,
    ) -> tuple[list[str], list[_Failure]]:
        """One try at the group's transaction. Without savepoints, the first failed effect
        raises _EffectFailedError (rolling it all back); with them, each failure rolls back
        its own message only. The copies of the event `failed_before` are left pending."""
        committed: list[str] = []
        failed: list[_Failure] = []
        succeeded: dict[uuid.UUID, bool] = {}  # events handled by this try
        if failed_before is not None:
            succeeded[failed_before] = False
        # Sorted by event id: concurrent groups lock their rows in the same order, no deadlock.
        claims = sorted((e for e in events if e[2] not in succeeded), key=lambda e: e[2])
        async with self._db.transaction() as connection:
            rows = await connection.fetch(
                CLAIM_EVENTS_SQL,
                [event_id for _, _, event_id in claims],
                [message_id for message_id, _, _ in claims],
                [fields.get("type", "") for _, fields, _ in claims],
            )
            new = {row[0] for row in rows}
            if not savepoints and self._group_handlers:
                await self._apply_group_effects(connection, events, new, succeeded)
            unclaim: list[uuid.UUID] = []
            for index, event in enumerate(events):
                message_id, fields, event_id = event
                if event_id in succeeded or event_id not in new:  # a duplicate
                    if succeeded.get(event_id, True):
                        committed.append(message_id)
                    else:
                        failed.append((message_id, fields, _DuplicateOfFailedError(event_id)))
                    continue
                savepoint = f"message_{index}" if savepoints else None
                failure = await self._handle_message(connection, savepoint, message_id, fields)
                succeeded[event_id] = failure is None
                if failure is None:
                    committed.append(message_id)
                elif savepoint is None:
                    raise _EffectFailedError(event, failure)
                else:
                    failed.append((message_id, fields, failure))
                    unclaim.append(event_id)
            if unclaim:
                await connection.execute(UNCLAIM_EVENTS_SQL, unclaim)
        return committed, failed

    async def _apply_group_effects(
        self,
        connection: Connection,
        events: list[_Event],
        new: set[uuid.UUID],
        succeeded: dict[uuid.UUID, bool],
    ) -> None:
        """The first try's new events of the types with a GroupEffectHandler: one call per type
        (marked in `succeeded`, so the per-event loop only acks them). A bad payload fails its
        own event (_EffectFailedError); a failed group effect the whole try."""
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            _, fields, event_id = event
            event_type = fields.get("type", "")
            if event_type not in self._group_handlers or event_id not in new:
                continue
            if event_id in succeeded:  # a second copy in this group: the first one counts
                continue
            try:
                _, payload = self._effect_of(fields)
            except ValueError as error:
                raise _EffectFailedError(event, error) from error
            by_type.setdefault(event_type, []).append(payload)
            succeeded[event_id] = True
        for event_type, payloads in by_type.items():
            try:
                await self._group_handlers[event_type](connection, payloads)
            except TRANSIENT_ERRORS:
                raise  # the whole group stays pending
            except Exception as error:
                raise _GroupEffectFailedError(repr(error)) from error

    async def _handle_message(
        self,
        connection: Connection,
        savepoint: str | None,
        message_id: str,
        fields: dict[str, str],
    ) -> Exception | None:
        """Everything about one new event, in its own scope (its ids on the log lines; a span,
        with tracing on), in the group's transaction: its effect, in a savepoint of its own if
        named. A failure is returned (None: the effect is done and commits with the group); a
        savepoint rolls it back alone."""
        event_type = fields.get("type", "?")
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"consume {event_type} {message_id}")  # named as it hangs, if it does
        tokens = dict(structlog.contextvars.bind_contextvars(message_id=message_id))
        try:
            # A failure leaves the event's scope as an exception, so a span records it.
            with self._events.incoming(self._stream, event_type, message_id, _headers(fields)):
                try:
                    handler, payload = self._effect_of(fields)
                    if request_id := payload.get("request_id"):
                        bound = structlog.contextvars.bind_contextvars(request_id=str(request_id))
                        tokens.update(bound)
                    if savepoint is None:
                        await handler(connection, payload)
                    else:
                        # Not released when done: COMMIT ends every savepoint of the
                        # transaction, a RELEASE per message would only add a round trip.
                        await connection.execute(f"SAVEPOINT {savepoint}")
                        try:
                            await handler(connection, payload)
                        except Exception:
                            await connection.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                            raise
                except TRANSIENT_ERRORS as error:
                    log.warning("consume_failed_transient", error=str(error) or repr(error))
                    raise
        except Exception as error:
            return error  # a permanent failure is logged once the group's fate is known
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        return None

    def _effect_of(self, fields: dict[str, str]) -> tuple[EffectHandler, dict[str, Any]]:
        """The event's handler and payload (ValueError for an event no retry can fix)."""
        event_type = fields.get("type", "")
        handler = self._handlers.get(event_type)
        if handler is None:
            raise ValueError(f"no handler for event type {event_type!r}")
        payload = json.loads(fields.get("payload", "null"))
        if not isinstance(payload, dict):
            raise ValueError("payload is not a JSON object")
        return handler, payload

    async def _retry_or_dead_letter(
        self, message_id: str, fields: dict[str, str], error: Exception, deliveries: int
    ) -> None:
        """A message that failed for a reason of its own: left pending (delivered again after
        CONSUMER_CLAIM_IDLE_MS) until its last delivery, then dead-lettered."""
        if deliveries < self._settings.consumer_max_deliveries:
            log.warning(
                "consume_failed", message_id=message_id, deliveries=deliveries, error=repr(error)
            )
            self._count("failed")
            return
        try:
            await self._dead_letter(message_id, fields, error, deliveries)
        except (*TRANSIENT_ERRORS, ResponseError) as failure:
            # Stays pending, retried at its next claim: never stops the consumer.
            log.warning(
                "dead_letter_failed", message_id=message_id, error=str(failure) or repr(failure)
            )
            self._count("failed")

    async def _dead_letter(
        self, message_id: str, fields: dict[str, str], error: Exception, deliveries: int
    ) -> None:
        """Copy to the dead-letter stream and ack, atomically (one script)."""
        entry = {
            **fields,
            "original_id": message_id,
            "original_stream": self._stream,
            "error": repr(error)[:2000],
            "deliveries": str(deliveries),
        }
        await self._redis.client.eval(
            DEAD_LETTER_SCRIPT,
            2,
            self._stream,
            self._settings.dead_letter_stream,
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

    @override
    async def close_listeners(self) -> None:
        """Stop reading. A blocked XREADGROUP is cancelled (anything it was about to deliver
        stays pending for this consumer); a batch being processed is never interrupted."""
        self._stopping = True
        self._outcomes_at_close = self.outcomes.copy()
        self._in_flight_at_close = self._in_hand
        if self._waiting_for_messages and self._loop_task is not None:
            self._loop_task.cancel()

    @override
    async def drain(self) -> None:
        await self._in_flight.wait_idle()

    @override
    async def stop_tasks(self) -> None:
        self._stopping = True
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
    """XREADGROUP's reply as [(id, fields)], skipping entries deleted from the stream."""
    if not reply:
        return []
    entries = reply[0][1]  # [[stream, [(id, fields), ...]]]
    return [(str(mid), dict(fields)) for mid, fields in entries if fields]


def _headers(fields: Mapping[str, str]) -> dict[str, str]:
    """The entry's `headers` field (see outbox.py); unreadable headers are ignored, never a
    reason to fail the message."""
    raw = fields.get("headers")
    if not raw:
        return {}
    try:
        headers = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(headers, dict):
        return {}
    return {str(key): str(value) for key, value in headers.items()}


def _event_id(message_id: str, fields: Mapping[str, str]) -> uuid.UUID:
    """The event's id (ValueError if it is not a UUID); events published without one dedupe
    on their stream id."""
    event_id = fields.get("event_id")
    return uuid.UUID(event_id) if event_id else uuid.UUID(_synthetic_event_id(message_id))


def _group_size(messages: int, concurrency: int) -> int:
    """Messages per group: the batch shared evenly among the concurrent transactions."""
    return max(1, min(MAX_GROUP, -(-messages // concurrency)))


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _synthetic_event_id(message_id: str) -> str:
    """Events published without an event_id dedupe on their stream id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"redis-stream-message:{message_id}"))
