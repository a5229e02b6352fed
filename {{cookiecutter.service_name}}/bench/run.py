"""`make bench`: the service against minimal baselines, as ratios measured in the same run.

Every program runs at its own defaults, as shipped (the service logs at info, writes its access
log, to a file); rows labelled "extra" change one setting. Each figure runs its baselines and the
service in alternating rounds (A B, then B A, ...), so drifts of a noisy machine hit all of them;
a ratio is the median of the per-round ratios. Load comes from separate processes on 127.0.0.1
(wrk for HTTP, h2load for gRPC), each run bounded in time; their own CPU is measured too, and a
figure whose load generator used its whole core is reported as client-bound, without a ratio.
Prints one Markdown table and adds it, dated, on top of docs/benchmarks.md: earlier runs and the
text after the results marker (the findings) are kept. Targets are checked here, not in the tests.

    python -m bench                       # every figure this service has (~3-5 minutes)
    python -m bench --only http,lifecycle # some of them
    python -m bench --quick               # one short round: proves the machinery works
    python -m bench --python .venv-bench/bin/python  # servers on that interpreter (`make bench`)
"""

from __future__ import annotations

import argparse
import datetime
import functools
import http.client
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PACKAGE = "{{ cookiecutter.package_name }}"
BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
DEFAULT_OUTPUT = PROJECT / "docs" / "benchmarks.md"
MARKER = "<!-- end of generated results: the text below is kept by `make bench` -->"
TITLE = "# Benchmarks"
TABLE_HEADER = "| figure | baseline | service | ratio | client CPU | target | verdict |"
HOST = "127.0.0.1"
TIMES = "\u00d7"  # the ratio sign
DASH = "\u2013"  # an empty cell, a range
CONNECTIONS = 32
IN_FLIGHT_MS = 1000
IN_FLIGHT_DRAIN_DELAY = 0.5
CLIENT_BOUND = 0.90  # the load generator's share of one core from which it set the pace
# The service's settings that cost per request: never inherited, so its own defaults apply.
DEFAULTS_KEPT = ("LOG_LEVEL", "LOG_FORMAT", "ACCESS_LOG", "EVENT_LOOP")
# Consumer with the real effect, msg/s, in the 2026-11-24 run of docs/benchmarks.md.
CONSUMER_REAL_TODAY = 3508

HAS_GRPC = (BENCH_DIR / "baseline_grpc.py").exists()
HAS_ITEMS = (BENCH_DIR / "baseline_items.py").exists()
HAS_CONSUMER = (BENCH_DIR / "bench_consumer.py").exists()
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
FIGURES = ["http", "grpc", "items", "consumer", "lifecycle"]
INSTALL_HINT = {
    "wrk": "apt-get install -y wrk (or brew install wrk)",
    "h2load": "apt-get install -y nghttp2-client (or brew install nghttp2)",
}


@dataclass
class Options:
    rounds: int
    seconds: float
    messages: int
    output: Path
    figures: list[str]
    quick: bool = False
    python: str = sys.executable


@dataclass
class Row:
    figure: str
    baseline: str
    service: str
    ratio: str
    client: str  # the load generator's CPU, baseline / service
    target: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: str = field(default_factory=lambda: load_average())

    def add(
        self,
        figure: str,
        baseline: str,
        service: str,
        ratio: str,
        target: str,
        ok: bool | None,
        client: str = DASH,
        verdict: str | None = None,
    ) -> None:
        if verdict is None:
            verdict = DASH if ok is None else ("met" if ok else "**missed**")
        self.rows.append(Row(figure, baseline, service, ratio, client, target, verdict))
        print(f"  {figure}: baseline {baseline} | service {service} | {ratio} | {verdict}")

    def skip(self, figure: str, why: str) -> None:
        self.rows.append(Row(figure, DASH, DASH, DASH, DASH, DASH, f"skipped: {why}"))
        print(f"  {figure}: skipped ({why})")

    def table(self) -> str:
        lines = [TABLE_HEADER, "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            cells = (
                row.figure,
                row.baseline,
                row.service,
                row.ratio,
                row.client,
                row.target,
                row.verdict,
            )
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def isolated_env(**extra: str) -> dict[str, str]:
    """The environment of one server: loopback ports, names nobody else uses, no drain delay;
    everything else (log level, access log, log format, event loop) at the service's defaults."""
    tag = uuid.uuid4().hex[:10]
    inherited = {name: value for name, value in os.environ.items() if name not in DEFAULTS_KEPT}
    return {
        **inherited,
        "HTTP_HOST": HOST,
        "GRPC_HOST": HOST,
        "HTTP_PORT": str(free_port()),
        "GRPC_PORT": str(free_port()),
        "ADMIN_HOST": HOST,
        "ADMIN_PORT": str(free_port()),
        "DRAIN_DELAY": "0",
        "SHUTDOWN_TIMEOUT": "10",
        "DATABASE_SCHEMA": f"bench_{tag}",
        "EVENTS_STREAM": f"bench.{tag}.events",
        "DEAD_LETTER_STREAM": f"bench.{tag}.events.dead",
        "CONSUMER_GROUP": f"bench-{tag}",
        "CACHE_PREFIX": f"bench:{tag}:",
        **extra,
    }


PYTHON = [sys.executable]
"""The interpreter every server, baseline and helper runs on (`--python`)."""


class Server:
    """One process we started (killed by its own PID only); its stdout and stderr go to a file,
    as in production (not a pipe, not /dev/null)."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("w")
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen(
            [PYTHON[0], *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def port(self) -> int:
        return int(self.env["HTTP_PORT"])

    def wait_ready(self, path: str = "/readyz", timeout: float = 30.0) -> float:
        """Seconds from spawn to the first 200 on `path`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            if http_status(self.port, path, timeout=1.0) == 200:
                return time.perf_counter() - self.spawned
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} not ready within {timeout} s:\n{self.output()}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def terminate_timed(self, timeout: float = 30.0) -> tuple[float, int]:
        """SIGTERM; returns (seconds until the process exited, exit code)."""
        sent = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return time.perf_counter() - sent, code

    def output(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def http_status(port: int, path: str, timeout: float) -> int | None:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


def python_module(module: str, *args: str, env: dict[str, str], timeout: float = 180) -> str:
    """Run `python -m module args` to the end; its stdout (raises with its output on failure)."""
    result = subprocess.run(
        [PYTHON[0], "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)}: {result.stdout}{result.stderr}")
    return result.stdout


@contextmanager
def servers(workdir: Path, *specs: tuple[str, list[str], dict[str, str]]) -> Iterator[list[Server]]:
    """Start servers (migrating their schemas first when the service has Postgres), ready."""
    started: list[Server] = []
    try:
        for name, args, env in specs:
            if HAS_ITEMS:
                python_module(PACKAGE, "migrate", env=env)
            started.append(Server(name, args, env, workdir))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()
        for _, _, env in specs:
            drop_isolated(env)


def drop_isolated(env: dict[str, str]) -> None:
    if HAS_ITEMS:
        python_module("bench.baseline_items", "drop", env=env)


# -- load generators -----------------------------------------------------------------------------


@dataclass
class Load:
    rate: float  # requests per second
    p99_ms: float
    errors: int
    requests: int
    cpu_us: float = 0.0  # the server's CPU time (user + system) per request
    client_cpu: float = 0.0  # the load generator's CPU time over the run's wall time (1: a core)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User + system CPU time of our children that have exited and been waited for: during a
    load, only the load generator (the servers run on until they are stopped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(pid: int, generate: Callable[[], Load]) -> Load:
    """Run a load and charge the server's CPU time to its requests (unlike throughput, CPU per
    request hardly moves when other processes compete for the machine); note the load
    generator's CPU too: one that used its whole core measured itself, not the server."""
    server_before, client_before = cpu_seconds(pid), children_cpu_seconds()
    started = time.perf_counter()
    load = generate()
    wall = time.perf_counter() - started
    load.cpu_us = (cpu_seconds(pid) - server_before) / max(1, load.requests) * 1e6
    load.client_cpu = (children_cpu_seconds() - client_before) / wall
    return load


def need(tool: str) -> str | None:
    """None if the tool is installed, else how to install it."""
    return None if shutil.which(tool) else f"{tool} not found: {INSTALL_HINT[tool]}"


WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: float, script: Path | None = None) -> Load:
    """wrk: 1 thread, 32 keep-alive connections, `seconds` long, with the latency histogram."""
    args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if rate is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(non_2xx.group(1))
    requests = re.search(r"(\d+) requests in", out)
    total = int(requests.group(1)) if requests else 0
    p99_ms = float(p99.group(1)) * WRK_UNITS[p99.group(2)]
    return Load(float(rate.group(1)), p99_ms, errors, total)


def h2load_grpc(url: str, frame: Path, seconds: float, workdir: Path) -> Load:
    """h2load as a gRPC client: 4 connections x 8 streams = 32 concurrent unary calls."""
    log = workdir / f"h2load-{uuid.uuid4().hex[:6]}.log"
    args = [
        "h2load",
        "-c4",
        "-m8",
        "-t1",
        f"-D{max(1, round(seconds))}",
        "-d",
        str(frame),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--log-file",
        str(log),
        url,
    ]
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out
    )
    if rate is None or counts is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line)
    log.unlink()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000
    return Load(float(rate.group(1)), p99, int(counts.group(2)), len(latencies))


# -- rounds and ratios ---------------------------------------------------------------------------


def alternate(rounds: int, measures: Sequence[Callable[[], T]]) -> list[list[T]]:
    """Each measure once per round, the order reversed every other round (A B, B A, ...)."""
    results: list[list[T]] = [[] for _ in measures]
    for round_index in range(rounds):
        order = list(range(len(measures)))
        if round_index % 2:
            order.reverse()
        for index in order:
            results[index].append(measures[index]())
    return results


def ratio(service: Sequence[float], baseline: Sequence[float]) -> float:
    """The median of the per-round ratios service / baseline."""
    return statistics.median(s / b for s, b in zip(service, baseline, strict=True))


def spread(values: Sequence[float], unit: str, digits: int = 0) -> str:
    """The median, and the range over the rounds when there is more than one."""
    median = f"{statistics.median(values):,.{digits}f}"
    if len(values) == 1:
        return f"{median} {unit}"
    return f"{median} {unit} ({min(values):,.{digits}f}{DASH}{max(values):,.{digits}f})"


@dataclass(frozen=True)
class Metric:
    attribute: str  # a field of Load
    unit: str
    digits: int = 0

    def of(self, loads: Sequence[Load]) -> list[float]:
        return [getattr(load, self.attribute) for load in loads]


REQUESTS = Metric("rate", "req/s")
CALLS = Metric("rate", "calls/s")
P99 = Metric("p99_ms", "ms", 2)
CPU = Metric("cpu_us", "µs")


def client_share(loads: Sequence[Load]) -> float:
    return statistics.median(load.client_cpu for load in loads)


def add_load_row(
    report: Report,
    figure: str,
    base: Sequence[Load],
    runs: Sequence[Load],
    metric: Metric,
    target: str,
    check: Callable[[float], bool] | None,
) -> None:
    """One row service / baseline; no ratio if either load generator saturated its core."""
    base_values, values = metric.of(base), metric.of(runs)
    shares = (client_share(base), client_share(runs))
    client = " / ".join(f"{share:.0%}" for share in shares)
    cells = (
        spread(base_values, metric.unit, metric.digits),
        spread(values, metric.unit, metric.digits),
    )
    if max(shares) >= CLIENT_BOUND:
        bound = f"client-bound (load generator ≥ {CLIENT_BOUND:.0%} of a core)"
        report.add(figure, *cells, DASH, target, None, client, verdict=bound)
        return
    result = ratio(values, base_values)
    errors = sum(load.errors for load in (*base, *runs))
    ok = None if check is None else check(result) and errors == 0
    report.add(figure, *cells, f"{result:.2f}{TIMES}", target, ok, client)


# -- figures -------------------------------------------------------------------------------------


def figure_http(options: Options, report: Report, workdir: Path) -> None:
    if missing := need("wrk"):
        report.skip("HTTP GET /v1/echo", missing)
        return
    loops = ["asyncio", "uvloop"] if HAS_UVLOOP else ["asyncio"]
    specs = []
    for loop in loops:
        env = isolated_env()
        specs.append(
            (f"aiohttp-{loop}", ["-m", "bench.baseline_http", env["HTTP_PORT"], loop], env)
        )
    specs.append(("service", ["-m", PACKAGE], isolated_env()))
    specs.append(("service-no-access-log", ["-m", PACKAGE], isolated_env(ACCESS_LOG="false")))
    with servers(workdir, *specs) as started:
        urls = [f"http://{HOST}:{server.port}/v1/echo?msg=hello" for server in started]
        for url in urls:  # warm-up, not counted
            wrk(url, 1)
        measures = [
            functools.partial(
                measured, server.process.pid, functools.partial(wrk, url, options.seconds)
            )
            for server, url in zip(started, urls, strict=True)
        ]
        loads = dict(
            zip([name for name, _, _ in specs], alternate(options.rounds, measures), strict=True)
        )
        errors = {name: sum(load.errors for load in runs) for name, runs in loads.items()}
    on_asyncio = loads["aiohttp-asyncio"]
    fastest = loops[-1]
    on_fastest = loads[f"aiohttp-{fastest}"]
    service = loads["service"]
    quiet = loads["service-no-access-log"]
    name = "HTTP GET /v1/echo, 32 conns"
    defaults = "service (defaults)"
    add_load_row(
        report,
        f"{name}, req/s: {defaults} / aiohttp on asyncio",
        on_asyncio,
        service,
        REQUESTS,
        f"≥ 1.00{TIMES}",
        lambda result: result >= 1.0,
    )
    if HAS_UVLOOP:
        add_load_row(
            report,
            f"{name}, req/s: {defaults} / aiohttp on uvloop",
            on_fastest,
            service,
            REQUESTS,
            f"≥ 0.85{TIMES}",
            lambda result: result >= 0.85,
        )
    else:
        report.skip(f"{name}, req/s: {defaults} / aiohttp on uvloop", "uvloop is not installed")
    add_load_row(
        report,
        f"{name}, p99: {defaults} / aiohttp on asyncio",
        on_asyncio,
        service,
        P99,
        f"≤ 1.20{TIMES}",
        lambda result: result <= 1.2,
    )
    add_load_row(
        report,
        f"{name}, server CPU per request: {defaults} / aiohttp on asyncio",
        on_asyncio,
        service,
        CPU,
        f"≤ 1.00{TIMES}",
        lambda result: result <= 1.0,
    )
    if HAS_UVLOOP:
        add_load_row(
            report,
            f"{name}, server CPU per request: {defaults} / aiohttp on uvloop",
            on_fastest,
            service,
            CPU,
            "report",
            None,
        )
    extra = "extra row, service with ACCESS_LOG=false"
    add_load_row(
        report,
        f"{name}, req/s: {extra} / aiohttp on {fastest}",
        on_fastest,
        quiet,
        REQUESTS,
        f"≥ 0.95{TIMES}",
        lambda result: result >= 0.95,
    )
    add_load_row(
        report,
        f"{name}, server CPU per request: {extra} / aiohttp on {fastest}",
        on_fastest,
        quiet,
        CPU,
        "report",
        None,
    )
    for program, count in errors.items():
        if count:
            report.notes.append(f"HTTP GET ({program}): {count} errors or non-2xx answers.")


def figure_grpc(options: Options, report: Report, workdir: Path) -> None:
    figure = "gRPC unary Echo, 32 concurrent"
    if not HAS_GRPC:
        report.skip(figure, "the service has no gRPC")
        return
    if missing := need("h2load"):
        report.skip(figure, missing)
        return
    frame = workdir / "echo.frame"
    python_module("bench.baseline_grpc", "frame", str(frame), env=dict(os.environ))
    baseline_env = isolated_env()
    service_env = isolated_env()
    baseline_args = ["-m", "bench.baseline_grpc", "serve", baseline_env["GRPC_PORT"]]
    path = f"/{PACKAGE}.v1.EchoService/Echo"
    with servers(workdir, ("service", ["-m", PACKAGE], service_env)) as (service,):
        baseline = Server("baseline-grpc", baseline_args, baseline_env, workdir)
        try:
            targets = [f"{HOST}:{env['GRPC_PORT']}" for env in (baseline_env, service_env)]
            for target in targets:  # both answer a real client before the load starts
                wait_grpc(target)
            urls = [f"http://{target}{path}" for target in targets]
            for url in urls:
                h2load_grpc(url, frame, 1, workdir)
            pids = [baseline.process.pid, service.process.pid]
            base, runs = alternate(
                options.rounds,
                [
                    functools.partial(
                        measured,
                        pid,
                        functools.partial(h2load_grpc, url, frame, options.seconds, workdir),
                    )
                    for pid, url in zip(pids, urls, strict=True)
                ],
            )
        finally:
            baseline.stop()
    versus = "service (defaults) / plain grpc.aio"
    add_load_row(
        report,
        f"{figure}, calls/s: {versus}",
        base,
        runs,
        CALLS,
        f"≥ 0.95{TIMES}",
        lambda result: result >= 0.95,
    )
    add_load_row(report, f"{figure}, p99: {versus}", base, runs, P99, "report", None)
    add_load_row(
        report,
        f"{figure}, server CPU per call: {versus}",
        base,
        runs,
        CPU,
        f"≤ 1.05{TIMES} (1 / 0.95)",
        lambda result: result <= 1 / 0.95,
    )
    if errors := sum(load.errors for load in (*base, *runs)):
        report.notes.append(f"gRPC: {errors} failed calls.")


def wait_grpc(target: str, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            python_module("bench.baseline_grpc", "check", target, env=dict(os.environ), timeout=30)
            return
        except RuntimeError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.2)


POST_ITEM_LUA = """
wrk.method = "POST"
wrk.body = '{"name": "bench", "quantity": 1}'
wrk.headers["Content-Type"] = "application/json"
"""


def figure_items(options: Options, report: Report, workdir: Path) -> None:
    figure = "HTTP POST /v1/items + event publish"
    if not HAS_ITEMS:
        report.skip(figure, "the service has no items (Postgres)")
        return
    if missing := need("wrk"):
        report.skip(figure, missing)
        return
    script = workdir / "post_item.lua"
    script.write_text(POST_ITEM_LUA)
    baseline_env = isolated_env()
    service_env = isolated_env()
    specs = [
        ("baseline-items", ["-m", "bench.baseline_items", baseline_env["HTTP_PORT"]], baseline_env),
        ("service", ["-m", PACKAGE], service_env),
    ]
    with servers(workdir, *specs) as started:
        urls = [f"http://{HOST}:{server.port}/v1/items" for server in started]
        for url in urls:
            wrk(url, 1, script)
        base, runs = alternate(
            options.rounds,
            [
                functools.partial(
                    measured,
                    server.process.pid,
                    functools.partial(wrk, url, options.seconds, script),
                )
                for server, url in zip(started, urls, strict=True)
            ],
        )
    versus = "service (defaults) / its handler on a plain app (run_app defaults, access log on)"
    add_load_row(
        report,
        f"{figure}, req/s: {versus}",
        base,
        runs,
        REQUESTS,
        f"≥ 1.27{TIMES}",
        lambda result: result >= 1.27,
    )
    add_load_row(
        report, f"{figure}, server CPU per request: {versus}", base, runs, CPU, "report", None
    )
    if errors := sum(load.errors for load in (*base, *runs)):
        report.notes.append(f"POST /v1/items: {errors} errors or non-2xx answers.")


def figure_consumer(options: Options, report: Report, workdir: Path) -> None:
    if not HAS_CONSUMER:
        report.skip("consumer msg/s", "the service has no consumer")
        return
    env = isolated_env()
    python_module(PACKAGE, "migrate", env=env)
    count = str(options.messages)

    def measure(mode: str, effect: str) -> float:
        out = python_module("bench.bench_consumer", mode, effect, count, env=env)
        return float(json.loads(out.strip().splitlines()[-1])["rate"])

    try:
        noop_raw, noop_service = alternate(
            options.rounds,
            [
                functools.partial(measure, "raw", "noop"),
                functools.partial(measure, "service", "noop"),
            ],
        )
        real_raw, real_service = alternate(
            options.rounds,
            [
                functools.partial(measure, "raw", "real"),
                functools.partial(measure, "service", "real"),
            ],
        )
    finally:
        drop_isolated(env)
    versus = "service's StreamConsumer / raw XREADGROUP-XACK loop"
    noop_ratio = ratio(noop_service, noop_raw)
    report.add(
        f"consumer msg/s, no-op effect ({options.messages:,} msgs): {versus}",
        spread(noop_raw, "msg/s"),
        spread(noop_service, "msg/s"),
        f"{noop_ratio:.2f}{TIMES}",
        f"≥ 0.80{TIMES} and ≥ 5,000 msg/s",
        noop_ratio >= 0.80 and statistics.median(noop_service) >= 5000,
    )
    real = statistics.median(real_service)
    report.add(
        f"consumer msg/s, real effect ({options.messages:,} msgs): {versus}",
        spread(real_raw, "msg/s"),
        spread(real_service, "msg/s"),
        f"{ratio(real_service, real_raw):.2f}{TIMES}",
        f"≥ 10,000 msg/s or ≥ 1.5{TIMES} today ({CONSUMER_REAL_TODAY:,} msg/s)",
        real >= 10_000 or real >= 1.5 * CONSUMER_REAL_TODAY,
    )


def figure_lifecycle(options: Options, report: Report, workdir: Path) -> None:
    """Start-up time, idle RSS and SIGTERM → exit: fresh processes every round."""

    def baseline() -> tuple[float, float, float]:
        env = isolated_env()
        server = Server(
            "baseline-http", ["-m", "bench.baseline_http", env["HTTP_PORT"]], env, workdir
        )
        try:
            ready = server.wait_ready()
            time.sleep(1.0)
            rss = server.rss_mb()
            stop, _ = server.terminate_timed()
            return ready, rss, stop
        finally:
            server.stop()

    def service() -> tuple[float, float, float]:
        env = isolated_env()
        if HAS_ITEMS:
            python_module(PACKAGE, "migrate", env=env)
        server = Server("service", ["-m", PACKAGE], env, workdir)
        try:
            ready = server.wait_ready()
            time.sleep(1.0)
            rss = server.rss_mb()
            stop, code = server.terminate_timed()
            if code != 0:
                report.notes.append(f"idle SIGTERM: exit code {code}:\n{server.output()}")
            return ready, rss, stop
        finally:
            server.stop()
            drop_isolated(env)

    def in_flight() -> float:
        env = isolated_env(DRAIN_DELAY=str(IN_FLIGHT_DRAIN_DELAY))
        if HAS_ITEMS:
            python_module(PACKAGE, "migrate", env=env)
        server = Server("service-in-flight", ["-m", PACKAGE], env, workdir)
        statuses: list[int | None] = []
        try:
            server.wait_ready()
            path = f"/v1/echo?msg=slow&delay_ms={IN_FLIGHT_MS}"
            request = threading.Thread(
                target=lambda: statuses.append(http_status(server.port, path, timeout=30))
            )
            request.start()
            time.sleep(0.1)  # the request is in its handler
            stop, code = server.terminate_timed()
            request.join(timeout=30)
            if code != 0 or statuses != [200]:
                report.notes.append(
                    f"in-flight SIGTERM: exit code {code}, request answered {statuses}"
                )
            return stop
        finally:
            server.stop()
            drop_isolated(env)

    base, runs = alternate(options.rounds, [baseline, service])
    flights = [in_flight() for _ in range(options.rounds)]
    ready_b, rss_b, stop_b = ([r[i] for r in base] for i in range(3))
    ready_s, rss_s, stop_s = ([r[i] for r in runs] for i in range(3))
    report.add(
        "spawn → /readyz 200",
        spread(ready_b, "s", 3),
        spread(ready_s, "s", 3),
        f"{ratio(ready_s, ready_b):.2f}{TIMES}",
        "≤ 1.5 s",
        statistics.median(ready_s) <= 1.5,
    )
    report.add(
        "SIGTERM → exit, idle, DRAIN_DELAY=0",
        spread(stop_b, "s", 3),
        spread(stop_s, "s", 3),
        DASH,
        "≤ 0.3 s",
        statistics.median(stop_s) <= 0.3,
    )
    bound = IN_FLIGHT_DRAIN_DELAY + IN_FLIGHT_MS / 1000 + 0.3
    report.add(
        f"SIGTERM → exit, {IN_FLIGHT_MS} ms request in flight, DRAIN_DELAY={IN_FLIGHT_DRAIN_DELAY}",
        DASH,
        spread(flights, "s", 3),
        DASH,
        f"≤ {bound:.1f} s (delay + L + 0.3)",
        max(flights) <= bound,
    )
    report.add(
        "idle RSS after start",
        spread(rss_b, "MB", 1),
        spread(rss_s, "MB", 1),
        f"{ratio(rss_s, rss_b):.2f}{TIMES}",
        "≤ 90 MB",
        statistics.median(rss_s) <= 90,
    )


FIGURE_RUNNERS: dict[str, Callable[[Options, Report, Path], None]] = {
    "http": figure_http,
    "grpc": figure_grpc,
    "items": figure_items,
    "consumer": figure_consumer,
    "lifecycle": figure_lifecycle,
}


# -- the report ----------------------------------------------------------------------------------


def tool_version(args: list[str]) -> str:
    if not shutil.which(args[0]):
        return "absent"
    result = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0] if first else "?"


def load_average() -> str:
    """The load averages (1, 5, 15 minutes): other work on the machine, the reason for ratios."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or "unknown CPU"


LEGEND = (
    "Every program at its own defaults: the service as shipped (LOG_LEVEL=info, ACCESS_LOG=true, "
    "LOG_FORMAT=auto, i.e. JSON lines, EVENT_LOOP=uvloop where the bake has it), stdout and "
    "stderr to a file; only ports, DRAIN_DELAY=0 and the names of its schema and streams are set. "
    "Rows labelled *extra row* change one setting. A ratio is the median of the per-round ratios "
    "service / baseline over alternating rounds (range in brackets). *client CPU*: the load "
    "generator's CPU time over its run's wall time (100% = one core), baseline / service; from "
    f"{CLIENT_BOUND:.0%} on, the client set the pace: the row says client-bound, with no ratio."
)


def runtime(python: str) -> str:
    """Which environment the servers ran from: the runtime one `make bench` makes, or another."""
    if Path(python).parent.parent.name == ".venv-bench":
        return "`.venv-bench` (runtime dependencies only, as in the image)"
    return f"`{python}`"


def render(report: Report, options: Options, started: float) -> str:
    """This run's section: when, on what, how, and its table."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    heading = f"## {now}" + (
        " (`--quick`: a smoke run, not a measurement)" if options.quick else ""
    )
    lines = [
        heading,
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"Python {platform.python_version()}, servers from {runtime(options.python)}; "
        f"{tool_version(['wrk', '--version'])}; "
        f"{tool_version(['h2load', '--version'])}; load average (1 / 5 / 15 min) "
        f"{report.load_before} before, {load_average()} after. "
        f"`make bench` took {time.perf_counter() - started:.0f} s: {options.rounds} alternating "
        f"round(s) of {options.seconds:g} s per figure.",
        "",
        LEGEND,
        "",
        report.table(),
    ]
    if report.notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


def write_report(section: str, output: Path) -> None:
    """This run's section on top; earlier runs below it; the text after the marker kept."""
    earlier, kept = "", ""
    if output.exists():
        head, found, kept = output.read_text().partition(MARKER)
        earlier = head.strip().removeprefix(TITLE).strip()
        if not found:  # not written by us: keep all of it, as an earlier run
            kept = ""
    if earlier and not earlier.startswith("## "):  # a run from before the dated sections
        earlier = f"## Earlier run\n\n{earlier}"
    parts = [TITLE, section, earlier, MARKER, kept.strip()]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n\n".join(part for part in parts if part) + "\n")


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s: a smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load run")
    parser.add_argument("--messages", type=int, default=2000, help="per consumer run")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"from {','.join(FIGURES)}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the servers and baselines: `make bench` gives a virtualenv of "
        "the runtime dependencies alone, as the image installs them",
    )
    args = parser.parse_args(argv)
    figures = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := sorted(set(figures) - set(FIGURES)):
        parser.error(f"unknown figure(s) {unknown}; choose from {FIGURES}")
    output = args.output.resolve()
    python = str(Path(args.python).absolute())
    if args.quick:
        return Options(1, 1.0, 300, output, figures, quick=True, python=python)
    rounds, seconds = max(1, args.rounds), max(1.0, args.seconds)
    return Options(rounds, seconds, args.messages, output, figures, python=python)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    PYTHON[0] = options.python
    started = time.perf_counter()
    report = Report()
    here = Path.cwd()
    # Every process starts in an empty directory: a `.env` file of the project would change the
    # defaults being measured. `bench` is found through PYTHONPATH instead.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        os.chdir(tmp)
        try:
            for name in options.figures:
                print(f"{name}:", flush=True)
                FIGURE_RUNNERS[name](options, report, Path(tmp))
        finally:
            os.chdir(here)
    section = render(report, options, started)
    print()
    print(report.table())
    write_report(section, options.output)
    print(f"\nadded to {options.output}")
    return 0
