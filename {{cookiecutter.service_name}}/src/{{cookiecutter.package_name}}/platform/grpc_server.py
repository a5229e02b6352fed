"""gRPC: the grpc.aio server, health and reflection, and its component (GracefulStop done right).

`server.stop(grace)` rejects new RPCs at once but returns while handlers may still run, and it
leaves server streams open until the grace ends. So every RPC is tracked: each method handler is
wrapped once, as its service registers (`RpcTracker`), unary work is awaited, and streams are told
to end with UNAVAILABLE as soon as the listeners close.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from time import perf_counter
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from prometheus_client import Gauge
from pydantic import Field, model_validator
from typing_extensions import override

from .assembly import Assembly, Feature
from .errors import (
    DEPENDENCY_FAILED,
    InvalidArgumentError,
    OverloadedError,
    ServiceError,
    is_dependency_failure,
)
from .inflight import InFlight
from .lifecycle import Component
from .logs import log
from .metrics import (
    REQUESTS_SHED,
    RequestFamilies,
    RequestMetrics,
)
from .readiness import Readiness
from .request_id import GRPC_METADATA_KEY, REQUEST_ID, request_id_from
from .settings import Config, Settings, SettingsGroup

SHUTTING_DOWN = "server shutting down"
NEVER_SHED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods answered whatever the load: health checks are probes."""

Behavior = Callable[..., Any]
"""A servicer method as grpc registers it: (request or request iterator, context)."""
Req = TypeVar("Req")
Resp = TypeVar("Resp")

GRPC_RPCS = RequestFamilies(
    "grpc_server_handled",
    "RPCs completed, by full method name and status code.",
    "grpc_server_handling_seconds",
    "Time from the RPC's start to its end (a stream's whole life), by full method name.",
    target_labels=("grpc_method",),
    status_label="grpc_code",
)
GRPC_IN_FLIGHT = Gauge("grpc_server_in_flight", "Unary RPCs being handled.")
GRPC_OPEN_STREAMS = Gauge("grpc_server_open_streams", "Streaming RPCs open.")


def grpc_metrics(access_log: bool) -> RequestMetrics:
    return RequestMetrics(
        GRPC_RPCS,
        access_event="grpc_request",
        target_fields=("method",),
        access_log=access_log,
    )


class _Stream:
    """A running streaming RPC, and whether its task is inside the handler's own code."""

    __slots__ = ("ended_by_server", "in_handler", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.in_handler = False
        self.ended_by_server = False


class _Undecodable:
    """A request whose bytes are not a valid message: the handler's wrapper answers
    INVALID_ARGUMENT (a deserializer that raises makes grpc answer UNKNOWN, with no say)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(load: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if load is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return load(data)
        except Exception as error:  # protobuf's DecodeError, or a custom deserializer's
            return _Undecodable(error)

    return decode


def _check_decoded(request: Any) -> None:
    if request.__class__ is _Undecodable:
        raise InvalidArgumentError("request", f"not a valid message ({request.error})")


class RpcTracker:
    """Wraps every handler: request id, in-flight tracking, metrics and the access log, load
    shedding, and stream ending on shutdown.

    The handlers are wrapped as they are registered (`registrar`), not by a server interceptor,
    which grpc runs on every call as two more coroutines and a lookup (2.4 % of a small unary
    call's instructions: docs/benchmarks.md)."""

    def __init__(self, metrics: RequestMetrics, max_in_flight: int = 2**62) -> None:
        self.max_in_flight = max_in_flight
        self.unary = InFlight()
        self.streams = InFlight()
        self.streams_ended = 0
        self._metrics = metrics
        self._open_streams: set[_Stream] = set()
        self._ending = False
        self._wrapped: dict[object, Any] = {}

    def registrar(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """What the services register on: `server`, with every method handler wrapped."""
        return _TrackingRegistrar(server, self)

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Req, Resp]
    ) -> grpc.RpcMethodHandler[Req, Resp]:
        """`handler` (of the full method name `method`) with the tracking around it, made once
        per handler."""
        wrapped: grpc.RpcMethodHandler[Req, Resp] | None = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(method, handler)
        return wrapped

    def end_streams(self) -> None:
        """End every open stream with UNAVAILABLE; streams opened from now on end at once."""
        self._ending = True
        self.streams_ended = len(self._open_streams)
        for stream in self._open_streams:
            stream.ended_by_server = True
            if stream.in_handler:  # else it ends by itself when it comes back for the next reply
                stream.task.cancel()

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Req, Resp]
    ) -> grpc.RpcMethodHandler[Req, Resp]:
        load, dump = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary or handler.unary_stream:
            load = _tolerant(load)
        if handler.unary_unary:
            unary = self._unary(method, handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(unary, load, dump)
        if handler.stream_unary:
            unary = self._unary(method, handler.stream_unary)
            return grpc.stream_unary_rpc_method_handler(unary, load, dump)
        if handler.unary_stream:
            stream = self._stream(method, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(stream, load, dump)
        if handler.stream_stream:
            stream = self._stream(method, handler.stream_stream)
            return grpc.stream_stream_rpc_method_handler(stream, load, dump)
        return handler

    def _unary(self, method: str, behavior: Behavior) -> Behavior:
        target, in_flight, metrics = (method,), self.unary, self._metrics
        call = _awaiting(behavior)
        # Counted with this call already in: beyond the limit it is refused before any work.
        limit = 2**62 if method.startswith(NEVER_SHED) else self.max_in_flight
        shed_count = REQUESTS_SHED.labels("grpc")

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _Rpc(target, in_flight, metrics, context):
                try:
                    if len(in_flight) > limit:
                        shed_count.inc()
                        raise OverloadedError(f"overloaded: {limit} RPCs in flight, retry later")
                    _check_decoded(request)
                    return await call(request, context)
                except (ServiceError, TimeoutError) as error:
                    await _abort_for(context, error)
                except grpc.aio.AbortError:
                    raise  # the handler's own context.abort()
                except Exception:
                    await _abort_internal(context, method)

        return unary

    def _stream(self, method: str, behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):
            return self._generator_stream(method, behavior)
        target, in_flight, metrics = (method,), self.streams, self._metrics
        call = _awaiting(behavior)

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            with _Rpc(target, in_flight, metrics, context) as rpc:
                await context.send_initial_metadata(rpc.metadata)
                state = self._open(rpc.task)
                try:
                    state.in_handler = True
                    _check_decoded(request)
                    await call(request, context)
                except (ServiceError, TimeoutError) as error:
                    await _abort_for(context, error)
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    await _abort_internal(context, method)
                except asyncio.CancelledError:
                    if not state.ended_by_server:
                        raise
                    rpc.task.uncancel()
                    _end_unavailable(context)
                finally:
                    self._open_streams.discard(state)

        return stream

    def _generator_stream(self, method: str, behavior: Behavior) -> Behavior:
        target, in_flight, metrics = (method,), self.streams, self._metrics

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            # keep_bound: a generator the client abandoned is closed later from another task,
            # where resetting the request id is not possible (nor needed: the RPC's task, and
            # the context it runs in, end with the RPC).
            with _Rpc(target, in_flight, metrics, context, keep_bound=True) as rpc:
                await context.send_initial_metadata(rpc.metadata)
                state = self._open(rpc.task)
                replies = behavior(request, context)
                try:
                    _check_decoded(request)
                    while not state.ended_by_server:
                        state.in_handler = True
                        try:
                            reply = await replies.__anext__()
                        except StopAsyncIteration:
                            return
                        finally:
                            state.in_handler = False
                        yield reply
                    _end_unavailable(context)
                except (ServiceError, TimeoutError) as error:
                    await _abort_for(context, error)
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    await _abort_internal(context, method)
                except asyncio.CancelledError:
                    if not state.ended_by_server:
                        raise
                    rpc.task.uncancel()
                    _end_unavailable(context)
                finally:
                    self._open_streams.discard(state)
                    await replies.aclose()

        return stream

    def _open(self, task: asyncio.Task[Any]) -> _Stream:
        state = _Stream(task)
        state.ended_by_server = self._ending
        self._open_streams.add(state)
        return state


class _TrackingRegistrar(grpc.aio.Server):
    """A server to register services on: each method handler goes to the real server wrapped
    by the tracker (the generated `add_..._to_server` registers every method both ways)."""

    def __init__(self, server: grpc.aio.Server, tracker: RpcTracker) -> None:
        self._server = server
        self._tracker = tracker

    @override
    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        tracker = self._tracker
        tracked = [_TrackedHandlers(handlers, tracker) for handlers in generic_rpc_handlers]
        self._server.add_generic_rpc_handlers(tracked)

    @override
    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        wrap = self._tracker.wrap
        wrapped = {name: wrap(f"/{service_name}/{name}", h) for name, h in method_handlers.items()}
        self._server.add_registered_method_handlers(service_name, wrapped)

    @override
    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    @override
    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    @override
    async def start(self) -> None:
        await self._server.start()

    @override
    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    @override
    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)


class _TrackedHandlers(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out wrapped by the tracker."""

    def __init__(self, handlers: grpc.GenericRpcHandler, tracker: RpcTracker) -> None:
        self._handlers = handlers
        self._tracker = tracker

    @override
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._handlers.service(handler_call_details)
        if handler is None:
            return None
        return self._tracker.wrap(handler_call_details.method, handler)


class _Rpc:
    """One RPC's bookkeeping around its handler: the request id (bound to the logs and returned
    in the trailing metadata), in-flight tracking under a name that says what the task serves,
    then the metrics and the access log under the final status code. A plain class with slots:
    it runs for every call.

    The trailers go out with the reply (or the error status) in the batch that ends the call. A
    unary call does not also send the id in its initial metadata: that takes an explicit
    `send_initial_metadata`, a batch of its own through grpc's core (+15 % CPU per call). Streams
    do send it there too, once, so the caller has it before the first reply."""

    __slots__ = (
        "_bound",
        "_context",
        "_in_flight",
        "_keep_bound",
        "_metrics",
        "_started",
        "_target",
        "metadata",
        "request_id",
        "task",
    )

    def __init__(
        self,
        target: tuple[str],
        in_flight: InFlight,
        metrics: RequestMetrics,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        keep_bound: bool = False,
    ) -> None:
        self._target = target
        self._in_flight = in_flight
        self._metrics = metrics
        self._context = context
        self._keep_bound = keep_bound

    def __enter__(self) -> _Rpc:
        self._started = perf_counter()
        self.request_id = request_id = _request_id(self._context)
        self._bound = REQUEST_ID.set(request_id)
        self.metadata = ((GRPC_METADATA_KEY, request_id),)
        self._context.set_trailing_metadata(self.metadata)
        self.task = self._in_flight.enter(f"grpc {self._target[0]} request_id={request_id}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._in_flight.discard(self.task)
        status = _status(self._context, exc)
        self._metrics.observe(self._target, status, perf_counter() - self._started, self.request_id)
        if not self._keep_bound:
            REQUEST_ID.reset(self._bound)


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's x-request-id if well-formed, else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if key == GRPC_METADATA_KEY:
            return request_id_from(value)
    return request_id_from(None)


def _awaiting(behavior: Behavior) -> Callable[..., Awaitable[Any]]:
    """`behavior` as a coroutine function (decided once per method, not per call)."""
    if inspect.iscoroutinefunction(behavior):
        return behavior

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call


def _status(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The RPC's status code name: the one set (abort, set_code), else from how it ended."""
    code = context.code()
    if code is not None:
        return str(getattr(code, "name", code))
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


async def _abort_for(
    context: grpc.aio.ServicerContext[Any, Any], error: ServiceError | TimeoutError
) -> NoReturn:
    """Handlers raise ServiceError (or time out); the client gets the matching status. Bad input
    also carries the standard rich status (`google.rpc.Status` with a `BadRequest` naming each
    field, in `grpc-status-details-bin`), for clients that read it (`rpc_status.from_call`)."""
    if isinstance(error, InvalidArgumentError):
        rich = rpc_status.to_status(_bad_request(error))
        trailers = (*(context.trailing_metadata() or ()), *rich.trailing_metadata)
        await context.abort(rich.code, rich.details, trailing_metadata=trailers)
    if isinstance(error, ServiceError):
        await context.abort(grpc.StatusCode[error.grpc_code], str(error))
    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


async def _abort_internal(context: grpc.aio.ServicerContext[Any, Any], method: str) -> NoReturn:
    """What a handler raised unexpectedly: logged with its traceback (called from the `except`
    block), answered INTERNAL with the request id only. grpc's own answer would be UNKNOWN with
    the exception's text, and that text can carry internals (a query, a driver's message). A
    dependency's failure is UNAVAILABLE (a retry can succeed), as generic."""
    error = sys.exception()
    if error is not None and is_dependency_failure(error):
        log.error("grpc_dependency_failed", method=method, error=repr(error))
        details = f"{DEPENDENCY_FAILED} (request id {REQUEST_ID.get()})"
        await context.abort(grpc.StatusCode.UNAVAILABLE, details)
    log.exception("grpc_unhandled_error", method=method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {REQUEST_ID.get()})")


def _bad_request(error: InvalidArgumentError) -> status_pb2.Status:
    request = error_details_pb2.BadRequest()
    for field, problem in error.violations.items():
        request.field_violations.add(field=field, description=problem)
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(error))
    status.details.add().Pack(request)
    return status


def _end_unavailable(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    context.set_details(SHUTTING_DOWN)


GrpcService = Callable[[grpc.aio.Server], str]
"""Registers one servicer on the server and returns the service's full name."""


class GrpcSettings(SettingsGroup):
    """The gRPC server."""

    grpc_host: str = Field(default="0.0.0.0", min_length=1)
    grpc_port: int = Field(default={{ cookiecutter.grpc_port }}, ge=1, le=65535)
    grpc_max_in_flight: int = Field(
        default=256, ge=1, description="Unary RPCs handled at once; more get RESOURCE_EXHAUSTED."
    )
    grpc_max_concurrent_rpcs: int = Field(
        default=1024,
        ge=2,
        description="Every RPC at once (streams and health checks too): grpc's own ceiling.",
    )

    @model_validator(mode="after")
    def _probes_fit_under_the_ceiling(self) -> GrpcSettings:
        if self.grpc_max_concurrent_rpcs <= self.grpc_max_in_flight:
            raise ValueError(
                f"GRPC_MAX_CONCURRENT_RPCS ({self.grpc_max_concurrent_rpcs}) must exceed "
                f"GRPC_MAX_IN_FLIGHT ({self.grpc_max_in_flight}): health checks need room when "
                "unary work is at its limit"
            )
        return self

    @override
    def check_with(self, config: Config) -> list[str]:
        return config[Settings].admin_port_clashes(self.grpc_port)


class GrpcServices(list[GrpcService]):
    """The RPCs the features add (`assembly[GrpcServices].append(...)`), served by GrpcServer."""


STOP_AFTER_IDLE_S = 1.0
"""How long `drain` waits for grpc's stop once no RPC handler of ours runs."""


class GrpcServer(Component):
    """Serves gRPC; on shutdown: NOT_SERVING, then stop(grace), streams ended, handlers awaited."""

    name = "grpc"

    def __init__(
        self,
        settings: Settings,
        grpc_settings: GrpcSettings,
        readiness: Readiness,
        services: Sequence[GrpcService] = (),
    ) -> None:
        self._settings = settings
        self._grpc = grpc_settings
        self._tracker = RpcTracker(
            grpc_metrics(settings.writes_access_log), grpc_settings.grpc_max_in_flight
        )
        GRPC_IN_FLIGHT.set_function(self._tracker.unary.__len__)
        GRPC_OPEN_STREAMS.set_function(self._tracker.streams.__len__)
        self._in_flight_at_close = 0
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            # The ceiling on everything, streams included, refused by grpc before any Python runs.
            # Unary work has its own, lower limit in the tracker, which health checks are exempt
            # from: this one counts them, so it sits well above.
            maximum_concurrent_rpcs=grpc_settings.grpc_max_concurrent_rpcs,
            # Without this, a second process could bind the same port and split the traffic.
            # A message is held whole in memory: no larger than an HTTP body may be.
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", settings.max_request_body_bytes),
            ],
        )
        registrar = self._tracker.registrar(self._server)
        names = [register(registrar) for register in services]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, registrar)
        self.service_names = (*names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(self.service_names, registrar)
        self._stopping: asyncio.Task[None] | None = None
        self.port = grpc_settings.grpc_port
        readiness.subscribe(self._mirror_readiness)

    async def _mirror_readiness(self, ready: bool, shutting_down: bool) -> None:
        if shutting_down:
            await self._health.enter_graceful_shutdown()
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *self.service_names):
            await self._health.set(service, status)

    @override
    async def start(self) -> None:
        await self._mirror_readiness(ready=False, shutting_down=False)
        address = f"{self._grpc.grpc_host}:{self._grpc.grpc_port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot bind gRPC to {address}: {error}") from error
        await self._server.start()
        log.info("grpc_listening", host=self._grpc.grpc_host, port=self.port)

    @override
    async def close_listeners(self) -> None:
        # No new RPCs from here on; the lifecycle's deadline bounds the grace, not grpc's timer.
        self._in_flight_at_close = len(self._tracker.unary)
        grace = self._settings.shutdown_timeout
        self._stopping = asyncio.create_task(self._server.stop(grace), name="grpc.server.stop")
        await asyncio.sleep(0)

    @override
    async def end_streams(self) -> None:
        self._tracker.end_streams()
        await self._tracker.streams.wait_idle()

    @override
    async def drain(self) -> None:
        """Unary RPCs finish; then grpc's own stop, for at most STOP_AFTER_IDLE_S while none of
        our handlers runs: grpc can count a call it accepted as the listener closed but never
        handed to a handler (seen under load: its stop waited for the deadline with nothing
        of ours in flight); `close` stops the server without grace."""
        while True:
            await self._tracker.unary.wait_idle()
            if self._stopping is None:
                return
            done, _ = await asyncio.wait({self._stopping}, timeout=STOP_AFTER_IDLE_S)
            if done or not self._tracker.unary:
                return

    @override
    async def close(self) -> None:
        await self._server.stop(None)

    @override
    def unfinished(self) -> list[asyncio.Task[object]]:
        return [*self._tracker.unary.tasks(), *self._tracker.streams.tasks()]

    @override
    def shutdown_report(self) -> dict[str, int]:
        return {
            "rpcs_in_flight_at_close": self._in_flight_at_close,
            "streams_ended": self._tracker.streams_ended,
        }


def _wire(assembly: Assembly) -> None:
    services = GrpcServices()
    assembly.provide(services)
    settings, grpc_settings = assembly.settings, assembly.config[GrpcSettings]
    assembly.servers.append(
        lambda: GrpcServer(settings, grpc_settings, assembly.readiness, services)
    )


GRPC = Feature("grpc", wire=_wire, settings=(GrpcSettings,))
"""The gRPC server (health, reflection) with the RPCs the features add to `GrpcServices`."""
