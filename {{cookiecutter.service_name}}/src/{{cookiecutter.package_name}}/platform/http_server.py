"""HTTP: the aiohttp application and its component (AppRunner + TCPSite, never `run_app`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from pydantic import BaseModel, Field
from typing_extensions import override

from .connection import ClientBodyError, ClientLimits, connection_factory, error_response
from .errors import (
    DEPENDENCY_FAILED,
    InvalidArgumentError,
    ServiceError,
    UnavailableError,
    UnsupportedMediaTypeError,
    is_dependency_failure,
)
from .http_streams import SHUTTING_DOWN, OpenStream, StreamKind, Streams
from .inflight import InFlight
from .lifecycle import Component
from .listener import Listener
from .logs import log
from .metrics import HTTP_IN_FLIGHT, HTTP_METHODS, REQUESTS_SHED, RequestMetrics, http_metrics
from .openapi import Doc, openapi_document
from .readiness import Readiness
from .request_id import HTTP_HEADER, REQUEST_ID, request_id_from
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
READINESS = web.AppKey("readiness", Readiness)
SERVICE = "{{ cookiecutter.service_name }}"

RETRY_AFTER_S = 1
"""What a shed request's `Retry-After` says: by then the burst has usually passed, or the load
balancer has moved the client elsewhere."""
StreamHandler = Callable[[web.Request, OpenStream], Awaitable[web.StreamResponse]]
"""A stream's handler: the request and its `OpenStream` (see `Routes.stream`)."""


CUT_MARGIN_S = 0.5
"""Kept between the cut of slow clients and the drain deadline: their handlers answer 408 in it."""


class Routes:
    """How the service and its features add HTTP routes: every handler is served inside the
    per-request work (request id, in-flight tracking, JSON errors, drain behaviour, metrics and
    the access log), wrapped once per route as it is added. An aiohttp middleware would do the
    same with two more coroutine layers per request: ~7 % of a small request's CPU
    (docs/benchmarks.md)."""

    def __init__(
        self,
        app: web.Application,
        readiness: Readiness,
        in_flight: InFlight,
        metrics: RequestMetrics,
        max_in_flight: int,
        streams: Streams,
    ) -> None:
        self.app = app
        """The application, for the state handlers need (`app[KEY] = value`)."""
        self._readiness = readiness
        self._in_flight = in_flight
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._streams = streams
        self.docs: dict[str, dict[str, tuple[Doc, bool]]] = {}
        """What each route says about itself, for `GET /openapi.json`: path -> method -> (its
        Doc, whether it can be shed)."""

    def get(
        self, path: str, handler: Handler, *, doc: Doc | None = None, shed: bool = True
    ) -> None:
        """GET (and HEAD) `path`. `shed=False`: never refused for overload (probes)."""
        self.add("GET", path, handler, doc=doc, shed=shed)

    def post(self, path: str, handler: Handler, *, doc: Doc | None = None) -> None:
        self.add("POST", path, handler, doc=doc)

    def put(self, path: str, handler: Handler, *, doc: Doc | None = None) -> None:
        self.add("PUT", path, handler, doc=doc)

    def patch(self, path: str, handler: Handler, *, doc: Doc | None = None) -> None:
        self.add("PATCH", path, handler, doc=doc)

    def delete(self, path: str, handler: Handler, *, doc: Doc | None = None) -> None:
        self.add("DELETE", path, handler, doc=doc)

    def add(
        self, method: str, path: str, handler: Handler, *, doc: Doc | None = None, shed: bool = True
    ) -> None:
        resource = self.app.router.add_resource(path)
        # The route template (bounded), not the raw path, names metrics and tasks.
        served = self._served(handler, resource.canonical, shed)
        if method == "GET":
            resource.add_route("HEAD", served)
        resource.add_route(method, served)
        if doc is not None:
            self.docs.setdefault(resource.canonical, {})[method] = (doc, shed)

    def stream(
        self, path: str, kind: StreamKind, handler: StreamHandler, *, doc: Doc | None = None
    ) -> None:
        """GET `path` as a long-lived stream (WebSocket, SSE). Streams are not requests: the
        drain does not wait for them (the shutdown ends them right after the listeners close,
        through what the handler gave `OpenStream.serving`), they are counted by kind in
        `http_server_open_streams`, and each writes one `http_stream` access log line when it
        ends. Before the response is prepared, errors answer JSON as for any request."""
        resource = self.app.router.add_resource(path)
        resource.add_route("GET", self._streamed(handler, kind, resource.canonical))
        if doc is not None:  # never shed: a stream is not a request in flight
            self.docs.setdefault(resource.canonical, {})["GET"] = (doc, False)

    def _streamed(self, handler: StreamHandler, kind: StreamKind, route: str) -> Handler:
        readiness, streams = self._readiness, self._streams
        task_name = f"http {kind} {route} request_id="

        async def streamed(request: web.Request) -> web.StreamResponse:
            request_id = request_id_from(request.headers.get(HTTP_HEADER))
            bound = REQUEST_ID.set(request_id)
            stream = streams.open(kind, route, task_name + request_id)
            status = 500
            try:
                try:
                    if streams.ending:  # a keep-alive connection asking after the listeners closed
                        raise UnavailableError(SHUTTING_DOWN)
                    response = await handler(request, stream)
                    await stream.ended()
                except Exception as error:
                    stream.ended_by = "error"
                    if stream.response is not None and stream.response.prepared:
                        log.exception("http_stream_failed", kind=kind, route=route)
                        response = stream.response  # its status line is sent: end it as it is
                    else:
                        response = _error_response(error, route, request)
                if not response.prepared:
                    response.headers[HTTP_HEADER] = request_id
                    if readiness.shutting_down:
                        response.force_close()
                status = response.status
            finally:
                streams.close(stream, status)
                REQUEST_ID.reset(bound)
            return response

        return streamed

    def add_fallback(self) -> None:
        """Last: every other path and method gets a JSON 404 or 405 (aiohttp's own are text)."""
        fallback = self.app.router.add_resource("/{path:.*}")
        others = [resource for resource in self.app.router.resources() if resource is not fallback]

        async def unmatched(request: web.Request) -> web.StreamResponse:
            allowed: set[str] = set()
            for resource in others:
                _, methods = await resource.resolve(request)
                allowed |= methods
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound()

        fallback.add_route("*", self._served(unmatched, "unmatched", shed=True))

    def _served(self, handler: Handler, route: str, shed: bool) -> Handler:
        """`handler` inside the per-request work. It runs for every request, so it stays lean:
        no context managers, no extra coroutine on the success path."""
        readiness, in_flight, metrics = self._readiness, self._in_flight, self._metrics
        # Beyond the limit a request is refused before any work: one comparison per request.
        limit, running = self._max_in_flight if shed else 2**62, in_flight.running
        shed_count = REQUESTS_SHED.labels("http")
        # Per method, made once: the metrics (and access log) target and the task name's prefix.
        by_method = {
            method: (metrics.target((method, route)), f"http {method} {route} request_id=")
            for method in (*HTTP_METHODS, "other")
        }
        other = by_method["other"]  # methods are the client's choice: metrics stay bounded

        async def served(request: web.Request) -> web.StreamResponse:
            started = perf_counter()
            request_id = request_id_from(request.headers.get(HTTP_HEADER))
            target, task_name = by_method.get(request.method, other)
            # Every log line of the request carries its id. Not reset after: the request runs in
            # its own task (aiohttp's), whose copy of the context ends with it.
            REQUEST_ID.set(request_id)
            if len(running) >= limit:
                shed_count.inc()
                refused = _overloaded(limit, request_id)
                refused.headers[HTTP_HEADER] = request_id
                target.observe(503, perf_counter() - started, request_id)
                return refused
            task = in_flight.enter(task_name + request_id)
            try:
                try:
                    response = await handler(request)
                except Exception as error:
                    response = _error_response(error, route, request)
                if not response.prepared:
                    response.headers[HTTP_HEADER] = request_id
                    if readiness.shutting_down:
                        # Moves keep-alive clients to a new connection, which the load balancer
                        # routes to a replica that is still ready.
                        response.force_close()
                target.observe(response.status, perf_counter() - started, request_id)
            finally:
                in_flight.discard(task)
            return response

        return served


def _overloaded(limit: int, request_id: str) -> web.Response:
    message = f"overloaded: {limit} requests in flight, retry later"
    response = error_response(503, message, instance=request_id)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _error_response(error: Exception, route: str, request: web.Request) -> web.StreamResponse:
    """The JSON error response for what a handler raised (called from its `except` block)."""
    if isinstance(error, InvalidArgumentError):
        return error_response(400, error.message, error.field, error.violations)
    if isinstance(error, ServiceError):
        return error_response(error.http_status, error.message, error.field)
    if isinstance(error, HttpProcessingError | web.RequestPayloadError):
        # aiohttp's parser refused the body (bad chunk, bad compression...): the same answer as
        # ours, and the same quiet end for aiohttp's read of the rest.
        cause = error.__cause__ if isinstance(error.__cause__, HttpProcessingError) else error
        message = getattr(cause, "message", "") or str(error)
        error = ClientBodyError(400, " ".join(f"request body: {message}".split())[:300])
        request.content.set_exception(error)
    if isinstance(error, ClientBodyError):
        # The body is broken, late or cut short: what is left of it on the connection cannot be
        # told from a next request, so the connection closes after the answer.
        response = error_response(error.status, error.message, "body")
        response.force_close()
        return response
    if isinstance(error, ConnectionError) and _client_gone(request):  # nobody to answer
        log.debug("http_client_gone", route=route, error=repr(error))
        return error_response(400, "connection closed by the client")
    if is_dependency_failure(error):  # a database refusing or resetting, Redis gone...
        log.error("http_dependency_failed", route=route, error=repr(error))
        response = error_response(503, DEPENDENCY_FAILED)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    if isinstance(error, TimeoutError):
        return error_response(504, "deadline exceeded")
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            return web.Response(status=error.status, headers=error.headers)
        text = error.text or ""
        detailed = text and not text.startswith(f"{error.status}:")
        response = error_response(error.status, text if detailed else error.reason)
        if allow := error.headers.get("Allow"):
            response.headers["Allow"] = allow
        return response
    log.exception("http_unhandled_error", route=route)  # called inside the `except`
    return error_response(500, "internal server error")


def _client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed (aiohttp drops the transport when it is lost)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class Health(BaseModel):
    status: str = Field(description="`ok`, `ready` or `not ready`.")
    reason: str | None = Field(default=None, description="Why not ready.")


LIVEZ = Doc("The event loop answers (liveness).", {200: ("Alive.", Health)})
READYZ = Doc(
    "Started, dependencies connected, not shutting down (readiness).",
    {200: ("Ready.", Health), 503: ("Not ready: `reason` says why.", Health)},
)


def json_reply(data: Any, status: int = 200) -> web.Response:
    """`data` as a JSON response, rendered by orjson. aiohttp's `json_response` runs
    `json.dumps`, then encodes the text and parses the content type it was given: on a small
    reply that was ~7 µs of the ~50 µs of a whole request (docs/benchmarks.md)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def livez(request: web.Request) -> web.Response:
    """The event loop answers: nothing else (a dependency outage must not restart every pod)."""
    return json_reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if readiness.ready:
        return json_reply({"status": "ready"})
    return json_reply({"status": "not ready", "reason": readiness.reason()}, status=503)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object: 415 unless it is `application/json` in UTF-8, 400
    naming the body unless it parses. orjson bounds what parsing costs: nesting past 1024 levels,
    numbers past a double's range, invalid UTF-8 and lone surrogates are refused (as errors, not
    a RecursionError or Python's 4,300-digit int limit), integers past 64 bits become floats
    (which integer fields refuse)."""
    charset = request.charset
    if request.content_type != "application/json" or (charset or "utf-8").lower() != "utf-8":
        got = request.headers.get("Content-Type", "none")
        raise UnsupportedMediaTypeError(f"must be application/json in UTF-8 (got {got[:100]})")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as error:
        raise InvalidArgumentError("body", f"not valid JSON ({error})") from error
    if not isinstance(body, dict):
        raise InvalidArgumentError("body", "must be a JSON object")
    return body


HttpRoutes = Callable[[Routes], None]
"""Adds a feature's routes (and what its handlers need, in `routes.app`)."""


def create_app(
    settings: Settings,
    readiness: Readiness,
    in_flight: InFlight,
    features: Sequence[HttpRoutes] = (),
    streams: Streams | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.max_request_body_bytes)
    app[SETTINGS] = settings
    app[READINESS] = readiness
    access_log = settings.writes_access_log
    streams = streams if streams is not None else Streams(access_log)
    metrics = http_metrics(access_log)
    routes = Routes(app, readiness, in_flight, metrics, settings.http_max_in_flight, streams)
    routes.get("/livez", livez, doc=LIVEZ, shed=False)
    routes.get("/readyz", readyz, doc=READYZ, shed=False)
    for add_routes in features:
        add_routes(routes)
    document = json.dumps(openapi_document(SERVICE, _version(), routes.docs)).encode()

    async def openapi(request: web.Request) -> web.Response:
        """The OpenAPI 3.1 document of every route above (made once)."""
        return web.Response(body=document, content_type="application/json")

    routes.get("/openapi.json", openapi, shed=False)
    routes.add_fallback()
    return app


def _version() -> str:
    """The installed distribution's version, for the OpenAPI document."""
    try:
        return version(SERVICE)
    except PackageNotFoundError:
        return "unknown"


class HttpServer(Component):
    """Serves the aiohttp app; on shutdown behaves like Go's `http.Server.Shutdown`."""

    name = "http"

    def __init__(
        self,
        settings: Settings,
        readiness: Readiness,
        features: Sequence[HttpRoutes] = (),
    ) -> None:
        self._settings = settings
        self._in_flight = InFlight()
        self._in_flight_at_close = 0
        self._clients = ClientLimits(settings.http_header_timeout, settings.http_body_timeout)
        self._streams = Streams(settings.writes_access_log)
        HTTP_IN_FLIGHT.set_function(self._in_flight.__len__)
        app = create_app(settings, readiness, self._in_flight, features, self._streams)
        # Our own phases bound the drain; aiohttp's timeout only bounds the final cleanup.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        self._listener: Listener | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return self._listener.port if self._listener is not None else self._settings.http_port

    @override
    async def start(self) -> None:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # made by setup()
        # Our own listener, not aiohttp's TCPSite: see listener.py.
        connections = partial(
            connection_factory, server, self._clients, self._settings.http_keepalive_timeout
        )
        self._listener = Listener(
            connections, self._settings.http_host, self._settings.http_port, backlog=1024
        )
        self._listener.start()
        log.info("http_listening", host=self._settings.http_host, port=self.port)

    @override
    async def close_listeners(self) -> None:
        self._in_flight_at_close = len(self._in_flight)
        if self._listener is not None:
            self._listener.close()  # new connections are refused; open ones are served
        server = self._runner.server
        if server is not None:
            await asyncio.sleep(0)  # let requests already read reach their handler first
            # Idle keep-alive connections close now, busy ones after replying (`Routes`); a client
            # still sending gets until the cut, bounded by the drain deadline, then 408 / close.
            loop = asyncio.get_running_loop()
            cut_at = min(
                loop.time() + self._settings.http_drain_read_timeout,
                self.drain_deadline - CUT_MARGIN_S,
            )
            self._clients.cut(server.connections, cut_at)

    @override
    async def end_streams(self) -> None:
        await self._streams.end_all()

    @override
    async def drain(self) -> None:
        """In-flight requests finish, and clients still sending finish or are cut (by the cut
        time: this polls only while such clients remain)."""
        server = self._runner.server
        while True:
            await self._in_flight.wait_idle()
            if server is None or not self._clients.still_sending(server.connections):
                return
            await asyncio.sleep(0.05)

    @override
    async def close(self) -> None:
        server = self._runner.server
        if server is not None:  # the drain deadline passed with clients still sending
            self._clients.cut_now(server.connections)
        await self._runner.cleanup()

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        return [*self._in_flight.tasks(), *self._streams.tasks.tasks()]

    @override
    def shutdown_report(self) -> dict[str, int]:
        return {
            "requests_in_flight_at_close": self._in_flight_at_close,
            "slow_clients_cut": self._clients.cut_clients,
            "streams_ended": self._streams.ended_by_shutdown,
        }
