"""Request ids: taken from the caller when well-formed, generated otherwise, echoed back."""

from __future__ import annotations

import contextvars
import re
from random import getrandbits

import structlog
from multidict import istr

HTTP_HEADER = istr("X-Request-ID")
"""Case-insensitive already: header lookups skip folding the name on every request."""
GRPC_METADATA_KEY = "x-request-id"

_ACCEPTED = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id_from(value: str | bytes | None) -> str:
    """The caller's id if it is a short token (safe to log and echo), else a fresh one."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if value and _ACCEPTED.fullmatch(value):
        return value
    # 128 random bits like uuid4().hex, from the random module's generator: a tenth of
    # uuid4's cost, half of os.urandom's (a system call). Ids need to be unique, not secret;
    # the generator is seeded from the OS and reseeded in forked children. `bytes.hex` writes
    # the same 32 digits as `f"{bits:032x}"` in under half its time (no format spec to parse).
    return getrandbits(128).to_bytes(16).hex()


def _structlog_var(key: str) -> contextvars.ContextVar[object]:
    """The context variable behind `structlog.contextvars.bind_contextvars(key=...)`, found
    through the public API (a bind returns its token, a token knows its variable)."""
    token = structlog.contextvars.bind_contextvars(**{key: ""})[key]
    token.var.reset(token)
    return token.var


REQUEST_ID: contextvars.ContextVar[object] = _structlog_var("request_id")
"""Setting it is `bind_contextvars(request_id=...)` without the per-call dictionaries: every log
line written while it is set carries the id. `REQUEST_ID.set(id)` returns the token with which
to reset it (`REQUEST_ID.reset(token)`) when the request ends."""


def current_request_id() -> str:
    """The id bound to the request or RPC being served ('' outside of one)."""
    value = REQUEST_ID.get()
    return value if isinstance(value, str) else ""
