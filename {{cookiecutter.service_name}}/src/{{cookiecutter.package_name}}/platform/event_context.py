"""What travels with an event besides its payload (the trace context, with tracing on)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol


class EventContext(Protocol):
    """What travels with an event besides its payload: headers captured where the event is
    written (the trace context, with tracing on) and the scope its consumer handles it in."""

    def outgoing(self) -> dict[str, str]:
        """Headers to store with an event written now."""
        ...

    def incoming(
        self, stream: str, event_type: str, message_id: str, headers: Mapping[str, str]
    ) -> AbstractContextManager[None]:
        """The scope in which the consumer handles the event (a span, with tracing on)."""
        ...


class NoEventContext:
    """Nothing travels with events (tracing off)."""

    def outgoing(self) -> dict[str, str]:
        return {}

    def incoming(
        self, stream: str, event_type: str, message_id: str, headers: Mapping[str, str]
    ) -> AbstractContextManager[None]:
        return contextlib.nullcontext()
