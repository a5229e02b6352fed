"""The consumer's Postgres side: a group of messages, one transaction, each effect exactly once.

A group is one transaction: one statement inserts the `processed_events` rows of all its events
(an event processed before is a duplicate: its effect is skipped), then their effects run one
after another. Failures are rare, so the first try takes no savepoints (they would cost a round
trip per message): if an effect fails, the transaction rolls back and the group runs again
without that message, this time with a SAVEPOINT per effect, so that a further failure rolls
back its own message only (its row is deleted before the COMMIT). A failure no savepoint can
catch (at COMMIT: a deferred constraint, say) costs the group its transaction; each message then
gets one of its own. The commit (its WAL flush) and the dedupe insert are paid once per group.

What becomes of a failed message (left pending, dead-lettered) and of the committed ones (acked)
is the stream runtime's business (consumer.py): `GroupCommit.commit` only says which is which.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg
import redis.asyncio as redis
import structlog

from .db import Connection, PostgresPool
from .dependency import DependencyUnavailableError
from .event_context import EventContext, NoEventContext
from .logs import log
from .outbox import REQUEST_ID_HEADER

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


class Message(NamedTuple):
    """A stream entry: its id and its fields (`type`, `event_id`, `payload`, `headers`)."""

    id: str
    fields: dict[str, str]

    @property
    def event_type(self) -> str:
        return self.fields.get("type", "")


class Event(NamedTuple):
    """A message with its event id, the key its effect is deduplicated on."""

    message: Message
    event_id: uuid.UUID


class Failure(NamedTuple):
    """A message whose effect did not commit, and why."""

    message: Message
    error: Exception

    @property
    def permanent(self) -> bool:
        """The message's own fault, which counts towards dead-lettering it. Otherwise (an
        infrastructure failure; the copy of an event that failed in the same group) the message
        is left pending and tried again, never dead-lettered for it."""
        return not isinstance(self.error, (*TRANSIENT_ERRORS, DuplicateOfFailedError))


class Outcome(NamedTuple):
    """What became of a group: the ids of the messages whose effects committed (or had committed
    before: duplicates), to ack; the messages that failed."""

    committed: list[str]
    failed: list[Failure]


class DuplicateOfFailedError(Exception):
    """An event delivered twice in one group whose first copy failed: this copy is left pending
    and handled again on its own (its first copy's failure is not its own)."""


class _GroupEffectFailedError(Exception):
    """Rolls back a group's first try when a GroupEffectHandler failed: which event failed is told
    by the second try, one event (and savepoint) at a time."""


class _EffectFailedError(Exception):
    """Rolls back a group's first try, which takes no savepoints, at its first failed effect."""

    def __init__(self, event: Event, error: Exception) -> None:
        super().__init__(repr(error))
        self.event = event
        self.error = error


class GroupCommit:
    """Applies the effects of groups of messages from one stream, exactly once each."""

    def __init__(
        self,
        db: PostgresPool,
        stream: str,
        handlers: Mapping[str, EffectHandler],
        events: EventContext | None = None,
        group_handlers: Mapping[str, GroupEffectHandler] | None = None,
    ) -> None:
        self._db = db
        self._stream = stream
        self._handlers = dict(handlers)
        self._events = events or NoEventContext()
        # An event's span covers its own effect: with tracing, each effect runs on its own.
        self._group_handlers = dict(group_handlers or {}) if events is None else {}

    async def commit(self, group: Sequence[Message]) -> Outcome:
        """The group's transaction (retried one message per transaction if it fails as a
        whole): which messages committed, which failed. Raises nothing but cancellation."""
        try:
            return await self._commit_group(group)
        except TRANSIENT_ERRORS as error:
            # Nothing of the group committed: all of it stays pending, redelivered once the
            # dependencies are back (an effect that did commit is then a no-op).
            log.warning(
                "consume_failed_transient", messages=len(group), error=str(error) or repr(error)
            )
            return Outcome([], [Failure(message, error) for message in group])
        except Exception as error:
            if len(group) == 1:
                return Outcome([], [Failure(group[0], error)])
            # Failed outside any message's savepoint (at COMMIT: a deferred constraint, say):
            # one transaction per message tells which message it was.
            log.warning("consume_group_failed", messages=len(group), error=repr(error))
            committed: list[str] = []
            failed: list[Failure] = []
            for message in group:
                outcome = await self.commit([message])
                committed += outcome.committed
                failed += outcome.failed
            return Outcome(committed, failed)

    async def _commit_group(self, group: Sequence[Message]) -> Outcome:
        """The group's transaction, tried without savepoints first, then with them if an
        effect failed."""
        failed: list[Failure] = []
        events: list[Event] = []
        for message in group:
            try:
                events.append(Event(message, event_id_of(message)))
            except ValueError as error:  # not a UUID: no retry can fix it
                failed.append(Failure(message, error))
        if not events:
            return Outcome([], failed)
        try:
            outcome = await self._transaction(events, savepoints=False)
        except _GroupEffectFailedError:
            outcome = await self._transaction(events, savepoints=True)
        except _EffectFailedError as first:
            # Rolled back at the first failure: again without it, a savepoint per message.
            failed.append(Failure(first.event.message, first.error))
            rest = [event for event in events if event is not first.event]
            outcome = await self._transaction(
                rest, savepoints=True, failed_before=first.event.event_id
            )
        return Outcome(outcome.committed, failed + outcome.failed)

    async def _transaction(
        self,
        events: list[Event],
        *,
        savepoints: bool,
        failed_before: uuid.UUID | None = None,
    ) -> Outcome:
        """One try at the group's transaction. Without savepoints, the first failed effect
        raises _EffectFailedError (rolling it all back); with them, each failure rolls back
        its own message only. The copies of the event `failed_before` are left pending."""
        committed: list[str] = []
        failed: list[Failure] = []
        succeeded: dict[uuid.UUID, bool] = {}  # events handled by this try
        if failed_before is not None:
            succeeded[failed_before] = False
        # Sorted by event id: concurrent groups lock their rows in the same order, no deadlock.
        claims = sorted((e for e in events if e.event_id not in succeeded), key=_by_event_id)
        async with self._db.transaction() as connection:
            rows = await connection.fetch(
                CLAIM_EVENTS_SQL,
                [event.event_id for event in claims],
                [event.message.id for event in claims],
                [event.message.event_type for event in claims],
            )
            new = {row[0] for row in rows}
            if not savepoints and self._group_handlers:
                await self._apply_group_effects(connection, events, new, succeeded)
            unclaim: list[uuid.UUID] = []
            for index, event in enumerate(events):
                message, event_id = event
                if event_id in succeeded or event_id not in new:  # a duplicate
                    if succeeded.get(event_id, True):
                        committed.append(message.id)
                    else:
                        failed.append(Failure(message, DuplicateOfFailedError(event_id)))
                    continue
                savepoint = f"message_{index}" if savepoints else None
                failure = await self._handle_message(connection, savepoint, message)
                succeeded[event_id] = failure is None
                if failure is None:
                    committed.append(message.id)
                elif savepoint is None:
                    raise _EffectFailedError(event, failure)
                else:
                    failed.append(Failure(message, failure))
                    unclaim.append(event_id)
            if unclaim:
                await connection.execute(UNCLAIM_EVENTS_SQL, unclaim)
        return Outcome(committed, failed)

    async def _apply_group_effects(
        self,
        connection: Connection,
        events: list[Event],
        new: set[uuid.UUID],
        succeeded: dict[uuid.UUID, bool],
    ) -> None:
        """The first try's new events of the types with a GroupEffectHandler: one call per type
        (marked in `succeeded`, so the per-event loop only acks them). A bad payload fails its
        own event (_EffectFailedError); a failed group effect the whole try."""
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            message, event_id = event
            event_type = message.event_type
            if event_type not in self._group_handlers or event_id not in new:
                continue
            if event_id in succeeded:  # a second copy in this group: the first one counts
                continue
            try:
                _, payload = self._effect_of(message)
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
        self, connection: Connection, savepoint: str | None, message: Message
    ) -> Exception | None:
        """Everything about one new event, in its own scope (its ids on the log lines; a span,
        with tracing on), in the group's transaction: its effect, in a savepoint of its own if
        named. A failure is returned (None: the effect is done and commits with the group); a
        savepoint rolls it back alone."""
        event_type = message.event_type or "?"
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"consume {event_type} {message.id}")  # named as it hangs, if it does
        headers = headers_of(message.fields)
        tokens = dict(structlog.contextvars.bind_contextvars(message_id=message.id))
        try:
            # A failure leaves the event's scope as an exception, so a span records it.
            with self._events.incoming(self._stream, event_type, message.id, headers):
                try:
                    handler, payload = self._effect_of(message)
                    # Events written before outbox.enqueue carried the request id in their
                    # payload: still read from there while such entries may be in a stream.
                    if request_id := headers.get(REQUEST_ID_HEADER) or payload.get("request_id"):
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

    def _effect_of(self, message: Message) -> tuple[EffectHandler, dict[str, Any]]:
        """The event's handler and payload (ValueError for an event no retry can fix)."""
        handler = self._handlers.get(message.event_type)
        if handler is None:
            raise ValueError(f"no handler for event type {message.event_type!r}")
        payload = json.loads(message.fields.get("payload", "null"))
        if not isinstance(payload, dict):
            raise ValueError("payload is not a JSON object")
        return handler, payload


def _by_event_id(event: Event) -> uuid.UUID:
    return event.event_id


def headers_of(fields: Mapping[str, str]) -> dict[str, str]:
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


def event_id_of(message: Message) -> uuid.UUID:
    """The event's id (ValueError if it is not a UUID); events published without one dedupe
    on their stream id."""
    event_id = message.fields.get("event_id")
    return uuid.UUID(event_id) if event_id else uuid.UUID(synthetic_event_id(message.id))


def synthetic_event_id(message_id: str) -> str:
    """Events published without an event_id dedupe on their stream id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"redis-stream-message:{message_id}"))


def group_size(messages: int, concurrency: int) -> int:
    """Messages per group: the batch shared evenly among the concurrent transactions."""
    return max(1, min(MAX_GROUP, -(-messages // concurrency)))
