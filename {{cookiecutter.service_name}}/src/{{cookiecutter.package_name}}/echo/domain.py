"""The echo example, shared by HTTP and gRPC: a reply after an optional, cancellable delay.

It exists to demonstrate in-flight work during shutdown: a request with `delay_ms` is still running
when SIGTERM arrives, and must complete (or be cancelled and named at the deadline).
"""

from __future__ import annotations

import asyncio
import re

from ..platform.errors import InvalidArgumentError

MAX_MESSAGE_CHARS = 4096
_INTEGER = re.compile(r"\s*-?[0-9]{1,12}\s*")


def check_message(message: object) -> str:
    if not isinstance(message, str):
        raise InvalidArgumentError("msg", "must be a string")
    if len(message) > MAX_MESSAGE_CHARS:
        raise InvalidArgumentError("msg", f"must be at most {MAX_MESSAGE_CHARS} characters")
    return message


def check_delay_ms(delay_ms: object, max_delay_ms: int) -> int:
    """Accept an int (or a decimal string of one) in [0, max_delay_ms]."""
    if isinstance(delay_ms, str) and _INTEGER.fullmatch(delay_ms):
        delay_ms = int(delay_ms)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int):
        raise InvalidArgumentError("delay_ms", "must be an integer number of milliseconds")
    if not 0 <= delay_ms <= max_delay_ms:
        raise InvalidArgumentError("delay_ms", f"must be between 0 and {max_delay_ms}")
    return delay_ms


async def echo(message: str, delay_ms: int) -> str:
    """Wait `delay_ms` (cancellation ends the wait at once), then return the message."""
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    return message
