"""Prometheus metrics: the platform's are declared here, an option's next to its component
(`grpc_server.py`, `db.py`, `consumer.py`); all are served by `admin_server.py`.

Labels stay bounded: route templates (`/v1/items/{item_id}`, never the raw path), registered gRPC
methods, status codes, a fixed set of outcomes and phases. Gauges that mirror state someone else
already keeps (in-flight sets, pool sizes) read it at scrape time instead of being updated per
request; backlog figures that need a Redis round trip are refreshed at scrape time, bounded.
"""

from __future__ import annotations

import asyncio
import platform
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from itertools import accumulate

from prometheus_client import (
    REGISTRY,
    Counter,
    Enum,
    Gauge,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from typing_extensions import override

from .logs import AccessLog, AccessTarget, log
from .phases import Phase

# No `*_created` series: one timestamp per label set doubles what Prometheus stores, for nothing
# a dashboard here uses.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _go_float(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]  # untyped in the library


class _Latencies:
    """One target's figures: its requests by status, and its latency histogram (a count per
    bucket, the last one +Inf, and the sum)."""

    __slots__ = ("by_status", "counts", "total")

    def __init__(self, buckets: int) -> None:
        self.by_status: dict[int | str, int] = {}
        self.counts = [0] * buckets
        self.total = 0.0


class RequestFamilies(Collector):
    """A counter of requests by target and status, and a latency histogram by target, kept as
    plain numbers and turned into Prometheus samples when scraped.

    prometheus_client's Counter and Histogram take a lock for every increment (a histogram
    observation: two); through them, one request cost ~6 µs on a 2-vCPU VM, a good part of the
    per-request work's whole cost. Requests and scrapes all run on the event loop's thread, so plain
    integers do without the locks. The exposition is the same as theirs."""

    def __init__(
        self,
        counter: str,
        counter_help: str,
        histogram: str,
        histogram_help: str,
        *,
        target_labels: tuple[str, ...],
        status_label: str,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self._counter, self._histogram = (counter, counter_help), (histogram, histogram_help)
        self._target_labels, self._status_label = target_labels, status_label
        self.bounds = tuple(float(bound) for bound in buckets)
        # The bucket labels exactly as prometheus_client's Histogram writes them.
        self._le = (*(_go_float(bound) for bound in self.bounds), "+Inf")
        self.latencies: dict[tuple[str, ...], _Latencies] = {}
        REGISTRY.register(self)

    def latencies_of(self, target: tuple[str, ...]) -> _Latencies:
        latencies = self.latencies.get(target)
        if latencies is None:
            latencies = self.latencies[target] = _Latencies(len(self.bounds) + 1)
        return latencies

    @override
    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            *self._counter, labels=[*self._target_labels, self._status_label]
        )
        for target, latencies in list(self.latencies.items()):
            for status, count in list(latencies.by_status.items()):
                requests.add_metric([*target, str(status)], count)
        yield requests
        durations = HistogramMetricFamily(*self._histogram, labels=self._target_labels)
        for target, latencies in list(self.latencies.items()):
            cumulative = accumulate(latencies.counts)
            buckets = list(zip(self._le, cumulative, strict=True))
            durations.add_metric(list(target), buckets, latencies.total)
        yield durations


HTTP_REQUESTS = RequestFamilies(
    "http_server_requests",
    "HTTP requests answered, by method, route template and status code.",
    "http_server_request_duration_seconds",
    "Time from the request reaching the service to its response, by method and route template.",
    target_labels=("method", "route"),
    status_label="status",
)
HTTP_IN_FLIGHT = Gauge("http_server_requests_in_flight", "HTTP requests being handled.")
HTTP_CLIENT_ERRORS = Counter(
    "http_server_client_errors",
    "Clients refused before or while sending a request: head_timeout (closed, 408), body_timeout "
    "(408), cut_at_shutdown (still sending when the listeners closed), malformed (the parser's "
    "400s).",
    ["reason"],
)
REQUESTS_SHED = Counter(
    "server_requests_shed",
    "Requests and RPCs refused because too many were in flight (HTTP 503, gRPC "
    "RESOURCE_EXHAUSTED).",
    ["server"],
)
HTTP_OPEN_STREAMS = Gauge(
    "http_server_open_streams", "HTTP streams open, by kind (websocket, sse).", ["kind"]
)
HTTP_STREAMS_ENDED = Counter(
    "http_server_streams_ended",
    "HTTP streams ended, by kind and by what ended them: client (closed or went away), shutdown "
    "(close frame or final event), slow (could not keep up, cut), error.",
    ["kind", "ended_by"],
)
HTTP_STREAM_MESSAGES = Counter(
    "http_server_stream_messages_sent",
    "Messages sent on HTTP streams (WebSocket messages, SSE events), by kind.",
    ["kind"],
)
LIFECYCLE_PHASE = Enum(
    "lifecycle_phase", "Where the service is in its life.", states=[phase.value for phase in Phase]
)
SHUTDOWN_PHASE_DURATION = Gauge(
    "shutdown_phase_duration_seconds", "How long each shutdown phase took.", ["phase"]
)
SHUTDOWN_STARTED = Gauge(
    "shutdown_started_timestamp_seconds", "Unix time the shutdown began (0: not shutting down)."
)
SHUTDOWN_BUDGET = Gauge(
    "shutdown_budget_seconds", "SHUTDOWN_TIMEOUT: the shutdown must end within this."
)
BUILD = Info("service_build", "The service's name, version and Python.")

SCRAPE_REFRESH_TIMEOUT = 1.0
"""Seconds a scrape waits for the figures that need a round trip; on timeout, the last values."""

Refresh = Callable[[], Awaitable[None]]
_refreshers: list[Refresh] = []


def describe_build(service: str) -> None:
    try:
        service_version = version(service)
    except PackageNotFoundError:
        service_version = "unknown"
    BUILD.info(
        {"service": service, "version": service_version, "python": platform.python_version()}
    )


def refresh_at_scrape(refresh: Refresh) -> None:
    """Run `refresh` before every scrape (bounded by SCRAPE_REFRESH_TIMEOUT, errors logged)."""
    _refreshers.append(refresh)


async def refresh_all() -> None:
    if not _refreshers:
        return
    work = asyncio.gather(*(refresh() for refresh in _refreshers), return_exceptions=True)
    try:
        results = await asyncio.wait_for(work, SCRAPE_REFRESH_TIMEOUT)
    except TimeoutError:
        log.warning("metrics_refresh_timeout", timeout_s=SCRAPE_REFRESH_TIMEOUT)
        return
    for result in results:
        if isinstance(result, Exception):
            log.warning("metrics_refresh_failed", error=str(result) or repr(result))


def shutdown_began(budget: float) -> None:
    SHUTDOWN_STARTED.set(time.time())
    SHUTDOWN_BUDGET.set(budget)


class RequestMetrics:
    """Counts and times requests or RPCs; writes the access log line when it is on.

    A request's target is its method and route template (HTTP) or its full method name (gRPC).
    `target(...)` is made once per target (per route and method); its `observe` is a dictionary
    increment, a bisection and the access log line: no locks (see RequestFamilies)."""

    def __init__(
        self,
        families: RequestFamilies,
        *,
        access_event: str,
        target_fields: tuple[str, ...],
        access_log: bool,
    ) -> None:
        self._families = families
        self._access_log = AccessLog(access_event) if access_log else None
        self._target_fields = target_fields
        self._targets: dict[tuple[str, ...], TargetMetrics] = {}

    def target(self, target: tuple[str, ...]) -> TargetMetrics:
        """The metrics (and access log lines) of one target."""
        metrics = self._targets.get(target)
        if metrics is None:
            access = None
            if self._access_log is not None:
                fields = dict(zip(self._target_fields, target, strict=True))
                access = self._access_log.target(fields)
            metrics = TargetMetrics(self._families, target, access)
            self._targets[target] = metrics
        return metrics

    def observe(
        self, target: tuple[str, ...], status: int | str, seconds: float, request_id: str = ""
    ) -> None:
        self.target(target).observe(status, seconds, request_id)


class TargetMetrics:
    """One target's counter, histogram and access log (see `RequestMetrics`)."""

    __slots__ = ("_access", "_bounds", "_by_status", "_latencies")

    def __init__(
        self, families: RequestFamilies, target: tuple[str, ...], access: AccessTarget | None
    ) -> None:
        self._latencies = families.latencies_of(target)
        self._by_status = self._latencies.by_status
        self._bounds = families.bounds
        self._access = access

    def observe(self, status: int | str, seconds: float, request_id: str = "") -> None:
        """One request: its status, duration and, for its access log line, the id the server
        bound to it (`AccessTarget.write`)."""
        by_status = self._by_status
        by_status[status] = by_status.get(status, 0) + 1
        latencies = self._latencies
        latencies.counts[bisect_left(self._bounds, seconds)] += 1  # the first bound >= seconds
        latencies.total += seconds
        if self._access is not None:
            self._access.write(status, int(seconds * 1_000_000), request_id)


def http_metrics(access_log: bool) -> RequestMetrics:
    return RequestMetrics(
        HTTP_REQUESTS,
        access_event="http_request",
        target_fields=("method", "route"),
        access_log=access_log,
    )
