"""One HTTP connection: aiohttp's protocol, with every client bounded in time and every refusal
answered in JSON.

aiohttp only bounds an idle keep-alive connection. A client that sends part of a head, or a body
a byte at a time, keeps its connection (and, for a body, a handler) for as long as it likes, and
the shutdown waits for the handler. Here each connection has at most one timer, for what the
server is waiting for from the client:

- a head: from the connection's start, or the first byte of the next request on a kept-alive
  connection, `HTTP_HEADER_TIMEOUT`; then 408 and close;
- a body: from the end of its head, `HTTP_BODY_TIMEOUT`; then reading it raises
  `BodyTimeoutError` in the handler (408, `Connection: close`);
- nothing (idle between requests): aiohttp's keep-alive timeout (`HTTP_KEEPALIVE_TIMEOUT`).

`ClientLimits.cut` (the listeners closed) brings every such deadline forward to the cut time and
closes idle connections at once: a slow client never holds the shutdown.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import _ErrInfo
from typing_extensions import override

from .logs import log
from .metrics import HTTP_CLIENT_ERRORS
from .request_id import current_request_id

NOTHING, HEAD, BODY = 0, 1, 2
"""What a connection waits for from its client, under a deadline (NOTHING: no deadline)."""


PROBLEM_JSON = "application/problem+json"

MAX_URL_BYTES = 8190
"""The longest request target (path and query) a head may carry; longer: 414 (aiohttp's default,
Apache's too)."""
MAX_FIELD_BYTES = 8190
"""The longest header field (name and value); longer: 431."""
MAX_HEADERS = 128
"""The most header fields in a head; more: 431. With `MAX_FIELD_BYTES`, a head is at most ~1 MB."""


def problem(
    status: int,
    message: str,
    field: str | None = None,
    violations: Mapping[str, str] | None = None,
    instance: str = "",
) -> dict[str, Any]:
    """The body of every 4xx and 5xx: RFC 9457 problem details. `instance` is the request id
    (the one being served, by default), `errors` names each bad field and its problem; `error`
    (the detail again) and `field` are the members of the service's first error format, kept for
    the clients that read them."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = message
    if instance := instance or current_request_id():
        body["instance"] = instance
    if violations:
        body["errors"] = [{"field": name, "detail": text} for name, text in violations.items()]
    body["error"] = message
    if field is not None:
        body["field"] = field
    return body


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    violations: Mapping[str, str] | None = None,
    instance: str = "",
) -> web.Response:
    """The service's error response (`problem`), for every 4xx and 5xx."""
    body = problem(status, message, field, violations, instance)
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


class ClientBodyError(TimeoutError):
    """Reading the request body failed because of the client: answered with `status`, then the
    connection closes (what is left of the body cannot be told from a next request).

    A TimeoutError only for aiohttp: after the reply it reads what is left of a body the handler
    did not finish, and it ends that read quietly on a TimeoutError (any other error is logged as
    unhandled)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyTimeoutError(ClientBodyError):
    """The body did not arrive in time: 408."""

    def __init__(self, message: str) -> None:
        super().__init__(408, message)


class ClientLimits:
    """The time limits every connection of one server shares, and the shutdown's cut."""

    def __init__(self, head_timeout: float, body_timeout: float) -> None:
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.cut_at = math.inf
        """Event-loop time by which every head and body must have arrived (from `cut` on)."""
        self.cut_clients = 0
        """Clients answered 408 or closed because they were still sending at the cut."""

    def cut(self, connections: list[web.RequestHandler], at: float) -> None:
        """From now on every client must finish its head or body by `at`; idle ones close."""
        self.cut_at = at
        for connection in connections:
            if isinstance(connection, Connection):
                connection.cut()

    def still_sending(self, connections: list[web.RequestHandler]) -> bool:
        """Whether a client is still sending a head or a body."""
        return any(isinstance(c, Connection) and c.waits_for != NOTHING for c in connections)

    def cut_now(self, connections: list[web.RequestHandler]) -> None:
        """Time out every client still sending (the shutdown is closing the connections)."""
        for connection in connections:
            if isinstance(connection, Connection) and connection.waits_for != NOTHING:
                connection.timed_out()


class Connection(web.RequestHandler):
    """aiohttp's `RequestHandler` with the deadlines above and JSON answers to what its parser
    refuses. The request's hot path only gains a comparison per `data_received`."""

    __slots__ = ("_body", "_body_length", "_limits", "_timer", "waits_for")

    def __init__(self, manager: web.Server, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), **kwargs)
        self._limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_length: str | None = None
        """The Content-Length of the body being read, as the head said (None: chunked)."""
        self.waits_for = NOTHING

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._expect(HEAD, self._limits.head_timeout)

    @override
    def connection_lost(self, exc: BaseException | None) -> None:
        self._expect(NOTHING, 0.0)
        super().connection_lost(exc)

    @override
    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a head arrived (or the parser refused one)
            messages = self._messages
            last = messages[-1] if messages else None
            if last is not None and isinstance(last[0], _ErrInfo):
                self._refused(last[0])
                last = messages[-1]
            body = last[1] if last is not None else None
            if body is None or body is EMPTY_PAYLOAD or body.is_eof():  # (no call for a GET)
                if self.waits_for != NOTHING:  # (a keep-alive request in one read: no timer)
                    self._expect(NOTHING, 0.0)
            else:
                self._body = body
                head = self._messages[-1][0]
                headers = head.headers if isinstance(head, RawRequestMessage) else {}
                self._body_length = headers.get(hdrs.CONTENT_LENGTH)
                self._expect(BODY, self._limits.body_timeout)
        elif self.waits_for == BODY:
            if self._body is None or self._body.is_eof():
                self._expect(NOTHING, 0.0)
        elif self.waits_for == NOTHING and self._between_requests():
            self._expect(HEAD, self._limits.head_timeout)  # the first bytes of the next request

    def _refused(self, refusal: _ErrInfo) -> None:
        """aiohttp answers 400 to every head its parser refuses: one too large gets 414 (its
        request target) or 431 (its header fields) instead. Told apart here, while the parser
        still holds the head: both parsers raise `LineTooLong` for either; llhttp's (C) from its
        URL callback, the Python one before it has stored the request line."""
        exc = refusal.exc
        if isinstance(exc, LineTooLong):
            lines = getattr(self._parser, "_lines", None)  # the Python parser's
            url = not lines if lines is not None else _raised_in(exc, "cb_on_url")
            if url:
                status, message = 414, f"request target over {MAX_URL_BYTES} bytes"
            else:
                status, message = 431, f"a header field over {MAX_FIELD_BYTES} bytes"
        elif isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers"):
            status, message = 431, f"over {MAX_HEADERS} header fields"
        else:
            return
        payload = self._messages[-1][1]
        self._messages[-1] = (_ErrInfo(status=status, exc=exc, message=message), payload)

    def _between_requests(self) -> bool:
        """Whether the next bytes start a new request: the last body is complete (bytes after a
        body cut short are still that body's) and the connection is still HTTP."""
        body = self._body
        return (
            (body is None or body.is_eof()) and not self._upgraded and self._payload_parser is None
        )

    @override
    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio's signature
        """The client closed its sending side. A request it sent in full is still answered (then
        the connection closes); a body cut short gets a 400 saying so. asyncio closes the
        transport when this returns a false value, at once: never do, as a request read in full may
        not have reached its handler yet (`close` ends an idle connection all the same)."""
        body = self._body
        if self.waits_for == BODY and body is not None:
            self._expect(NOTHING, 0.0)
            expected = self._body_length  # (the request object may not be made yet)
            of = f" of {expected}" if expected is not None else ""
            body.set_exception(
                ClientBodyError(
                    400, f"the client closed the connection after {body.total_bytes}{of} body bytes"
                )
            )
        self.close()  # after this reply
        return True

    def cut(self) -> None:
        """The listeners closed: see `ClientLimits.cut`."""
        if self.waits_for != NOTHING and self._timer is not None:
            if self._limits.cut_at < self._timer.when():
                self._expect(self.waits_for, self._limits.cut_at - self._loop.time())
        elif not (self._request_in_progress or self._messages):
            self.force_close()  # idle keep-alive: the client reconnects to another replica

    def timed_out(self) -> None:
        """The client did not send what was due in time: 408 for a head (the connection closes),
        `BodyTimeoutError` for the handler reading a body."""
        waits_for, limits = self.waits_for, self._limits
        self._expect(NOTHING, 0.0)
        cut = limits.cut_at != math.inf  # too slow for the shutdown, if not for the limits
        if cut:
            limits.cut_clients += 1
        if waits_for == HEAD:
            HTTP_CLIENT_ERRORS.labels("cut_at_shutdown" if cut else "head_timeout").inc()
            if self._request_in_progress or self._messages:
                self.close()  # a pipelined head behind a request: end after its reply
                return
            log.debug("http_head_timeout", cut_at_shutdown=cut)
            _request_timeout(self, "request head not received in time")
        elif waits_for == BODY:
            HTTP_CLIENT_ERRORS.labels("cut_at_shutdown" if cut else "body_timeout").inc()
            body = self._body
            if body is not None and not body.is_eof() and body.exception() is None:
                body.set_exception(BodyTimeoutError("request body not received in time"))

    @override
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp's parser refused (bad framing, oversized lines, bad methods...), in the
        service's JSON format rather than aiohttp's text. Logged at debug: a hostile client must
        not be able to fill the logs."""
        if request.writer.output_size > 0:  # part of a reply went out: only closing is left
            raise ConnectionError("response already started")
        if status >= 500:  # not the client's doing (handlers' errors are answered in Routes)
            log.error("http_unhandled_error", status=status, error=repr(exc))
            response = error_response(status, "internal server error")
        else:
            HTTP_CLIENT_ERRORS.labels("malformed").inc()
            text = message or getattr(exc, "message", None) or str(exc or "") or "bad request"
            text = " ".join(str(text).split())[:300]
            log.debug("http_request_refused", status=status, error=text)
            response = error_response(status, text)
        response.force_close()
        return response

    def _expect(self, waits_for: int, timeout: float) -> None:
        """Wait for `waits_for` at most `timeout` seconds (capped at the cut); NOTHING: no timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.waits_for = waits_for
        if waits_for != NOTHING:
            loop = self._loop
            at = min(loop.time() + timeout, self._limits.cut_at)
            self._timer = loop.call_at(at, self.timed_out)


def _raised_in(exc: BaseException, function: str) -> bool:
    """Whether `exc` was raised in a function named `function` (Cython functions too)."""
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name.rpartition(".")[2] == function:
            return True
        frame = frame.tb_next
    return False


def _request_timeout(connection: Connection, message: str) -> None:
    """408 to a client that has not sent a whole head (so there is no request to answer through
    aiohttp), then close."""
    transport = connection.transport
    if transport is not None and not transport.is_closing():
        body = json.dumps(problem(408, message)).encode()
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/problem+json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
    connection.force_close()


def connection_factory(
    server: web.Server, limits: ClientLimits, keepalive_timeout: float
) -> Connection:
    """A new connection of `server` (the listener's protocol factory, with `functools.partial`)."""
    return Connection(
        server,
        limits,
        keepalive_timeout=keepalive_timeout,
        access_log=None,
        max_line_size=MAX_URL_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
    )
