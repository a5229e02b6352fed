"""Zero-downtime rolling restart, proven locally: `make rollout-check`.

HAProxy stands in for a Kubernetes Service: two replicas behind it, an active `/readyz` check
every 200 ms that takes a replica out at the first failure, and NO retries, so every request that
reaches a replica which cannot serve it is a failure the clients see. Under steady load (HTTP
keep-alive{% if cookiecutter.use_grpc == "yes" %}, gRPC over h2c{% endif %}), each replica is restarted several times the way a Deployment
with maxSurge 1 / maxUnavailable 0 does it: start the replacement, wait until it is ready and in
the balancer, SIGTERM the old one, wait for its exit. Also `python -m scripts.rollout_check -h`.

Streams ride along: WebSocket clients echo through the balancer and reconnect after each close
frame (anything but a 1012 close is an abnormal close, a failure){% if cookiecutter.use_postgres == "yes" %}; an SSE subscriber follows
`/v1/items/events`, reconnecting with `Last-Event-ID`, while items are created: every created item
must arrive once and in the stream's order (a gap, a duplicate or an entry id below one already
received is a failure){% endif %}.

Replicas run the exact ENTRYPOINT/CMD of the Dockerfile, with this virtualenv's python first on
PATH, and the configuration of this environment (the `.env` file is not read: each replica runs in
a scratch directory). Everything listens on 127.0.0.1; only processes this script started are
signalled. Needs `haproxy` on PATH (Debian/Ubuntu: `apt-get install haproxy`).

Exit code 0 when no request failed and every replica exited 0 (with `--expect-failures`: when some
request failed, which is how `--drain-delay 0` shows that the check can see failures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
{%- if cookiecutter.use_grpc == "yes" %}
import grpc

from {{ cookiecutter.package_name }}.v1 import echo_pb2, echo_pb2_grpc
{%- endif %}

PROJECT = Path(__file__).resolve().parent.parent
DOCKERFILE = PROJECT / "Dockerfile"
PACKAGE = "{{ cookiecutter.package_name }}"
GRPC = {{ "True" if cookiecutter.use_grpc == "yes" else "False" }}
MIGRATE = {{ "True" if cookiecutter.use_postgres == "yes" else "False" }}
ITEMS = MIGRATE  # the items example, with its SSE stream of item.created
SERVICE_RESTART = 1012  # the close code of a WebSocket ended by a shutdown
SSE_CATCH_UP_S = 10.0  # after the load: how long the subscriber may take to get the last items
SLOTS = 3  # two replicas and a free slot for the surge replica
CHECK_INTER_MS = 200
COMMAND_TIMEOUT = 120  # seconds for `migrate` and HAProxy's config check


def dockerfile_command(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The container's command: the exec-form ENTRYPOINT followed by the exec-form CMD (if any).

    Shell forms are refused: under `/bin/sh -c` the service would not be PID 1 and would not get
    the orchestrator's SIGTERM.
    """
    instructions: dict[str, list[str]] = {}
    logical = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            instructions.clear()  # only the final stage counts
        if keyword.upper() in {"ENTRYPOINT", "CMD"}:
            try:
                value = json.loads(rest)
            except ValueError:
                value = None
            if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
                raise ValueError(f"{keyword} must be in exec form (a JSON array): {rest!r}")
            instructions[keyword.upper()] = value
    command = instructions.get("ENTRYPOINT", []) + instructions.get("CMD", [])
    if not command:
        raise ValueError(f"{dockerfile} has no ENTRYPOINT or CMD")
    return command


def venv_path_env(env: dict[str, str]) -> dict[str, str]:
    """env with this interpreter's directory first on PATH, as /opt/venv/bin is in the image."""
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class Slot:
    index: int
    http_port: int
    grpc_port: int

    @property
    def name(self) -> str:
        return f"r{self.index}"


@dataclass
class Restart:
    replica: str
    replacement: str
    ready_s: float = 0.0  # replacement started -> its /readyz is 200
    in_balancer_s: float = 0.0  # replacement started -> HAProxy sends it traffic
    out_of_balancer_s: float = 0.0  # SIGTERM -> HAProxy stopped sending traffic to the old one
    exit_s: float = 0.0  # SIGTERM -> the old one exited
    exit_code: int | None = None


@dataclass
class Report:
    drain_delay: float
    shutdown_timeout: float
    duration_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    failure_samples: list[str] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    streams: Counter[str] = field(default_factory=Counter)
    """WebSocket sessions, close frames and abnormal closes; SSE connections, events, final
    events, gaps, duplicates and events out of order; items created."""

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_failures(self) -> int:
        return sum(self.failures.values())

    def failed(self, kind: str, what: str) -> None:
        self.failures[kind] += 1
        if len(self.failure_samples) < 20:
            self.failure_samples.append(f"{kind}: {what}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "drain_delay": self.drain_delay,
            "shutdown_timeout": self.shutdown_timeout,
            "duration_s": round(self.duration_s, 3),
            "requests": dict(self.requests),
            "failures": dict(self.failures),
            "total_requests": self.total_requests,
            "total_failures": self.total_failures,
            "failure_samples": self.failure_samples,
            "restarts": [asdict(restart) for restart in self.restarts],
            "streams": dict(self.streams),
        }

    def text(self) -> str:
        lines = [
            f"rollout check: DRAIN_DELAY={self.drain_delay:g}s SHUTDOWN_TIMEOUT="
            f"{self.shutdown_timeout:g}s, {len(self.restarts)} restarts in {self.duration_s:.1f}s",
            f"requests: {self.total_requests} ("
            + ", ".join(f"{kind} {count}" for kind, count in sorted(self.requests.items()))
            + f"), failed: {self.total_failures}"
            + (
                " ("
                + ", ".join(f"{kind} {count}" for kind, count in sorted(self.failures.items()))
                + ")"
                if self.failures
                else ""
            ),
            f"websocket: {self.streams['ws_sessions']} sessions, "
            f"{self.streams['ws_close_frames']} close frames {SERVICE_RESTART}, "
            f"abnormal closes: {self.streams['ws_abnormal_closes']}",
        ]
        if ITEMS:
            lines.append(
                f"sse: {self.streams['sse_events']} events of {self.streams['items_created']} "
                f"items created, {self.streams['sse_connections']} connections, "
                f"{self.streams['sse_final_events']} final events, "
                f"gaps: {self.streams['sse_gaps']}, duplicates: {self.streams['sse_duplicates']}, "
                f"out of order: {self.streams['sse_out_of_order']}"
            )
        lines.append(" #  replica -> new  ready  in-LB  out-of-LB  exit  code")
        for number, restart in enumerate(self.restarts, 1):
            lines.append(
                f"{number:2d}  {restart.replica:>7} -> {restart.replacement:<3} "
                f"{restart.ready_s:5.2f}s {restart.in_balancer_s:5.2f}s "
                f"{restart.out_of_balancer_s:8.2f}s {restart.exit_s:5.2f}s  {restart.exit_code}"
            )
        lines += [f"  {sample}" for sample in self.failure_samples[:5]]
        return "\n".join(lines)


def entry_key(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id (`<ms>-<seq>`, an SSE event's id) as a pair that sorts like the
    stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def sse_blocks(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """The stream's blocks (lines up to a blank line) as {field: value}; comments skipped."""
    block: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line:
            name, _, value = line.partition(":")
            if name:
                block[name] = value.removeprefix(" ")
        elif block:
            yield block
            block = {}


def haproxy_config(slots: Sequence[Slot], http_front: int, grpc_front: int, sock: Path) -> str:
    """A Service's behaviour: health-checked endpoints, per-request balancing, no retries."""
    check = f"check inter {CHECK_INTER_MS}ms fall 1 rise 1"
    config = f"""
global
    stats socket {sock} mode 600 level admin
    maxconn 4096

defaults
    mode http
    retries 0
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout check 1s
    option httpchk GET /readyz
    http-check expect status 200

frontend http_in
    bind 127.0.0.1:{http_front}
    default_backend http_replicas

backend http_replicas
    balance roundrobin
"""
    for slot in slots:
        config += f"    server {slot.name} 127.0.0.1:{slot.http_port} {check}\n"
    if GRPC:
        config += f"""
frontend grpc_in
    bind 127.0.0.1:{grpc_front} proto h2
    default_backend grpc_replicas

backend grpc_replicas
    balance roundrobin
"""
        for slot in slots:
            config += (
                f"    server {slot.name} 127.0.0.1:{slot.grpc_port} proto h2 {check} "
                f"port {slot.http_port} check-proto h1\n"
            )
    return config


async def haproxy_states(sock: Path) -> dict[tuple[str, str], str]:
    """(backend, server) -> status ("UP", "DOWN", ...) from HAProxy's stats socket."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(b"show stat\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    name, server, status = header.index("pxname"), header.index("svname"), header.index("status")
    states = {}
    for line in lines[1:]:
        columns = line.split(",")
        if len(columns) > status and columns[server] not in {"FRONTEND", "BACKEND"}:
            states[(columns[name], columns[server])] = columns[status].split(" ")[0]
    return states


async def run_command(
    command: Sequence[str], cwd: Path, env: dict[str, str] | None
) -> tuple[int, str]:
    """Run a command to its end (bounded); (exit code, output)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return -9, f"{command[0]} did not finish within {COMMAND_TIMEOUT}s"
    return process.returncode or 0, output.decode(errors="replace")


class Rollout:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        ports = free_ports(SLOTS * 2 + 2)
        self.slots = [Slot(i, ports[2 * i], ports[2 * i + 1]) for i in range(SLOTS)]
        self.http_front, self.grpc_front = ports[-2], ports[-1]
        self.sock = work / "haproxy.sock"
        self.report = Report(args.drain_delay, args.shutdown_timeout)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.running: dict[int, subprocess.Popen[bytes]] = {}  # slot index -> replica
        self.generation = 0
        self.command = dockerfile_command()
        self.stop_load = asyncio.Event()
        self.created: list[int] = []  # items created through the balancer (201)
        self.received: Counter[int] = Counter()  # item ids the SSE subscriber got
        self.received_ids: Counter[str] = Counter()  # their stream entry ids
        self.newest_received = (0, 0)  # the highest entry id received (entry_key)
        self.subscribed = asyncio.Event()
        self.deadline: float = time.monotonic() + args.timeout

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the rollout check ran out of its {self.args.timeout:g}s budget")
        return left

    def env(self, slot: Slot | None = None) -> dict[str, str]:
        env = venv_path_env(dict(os.environ))
        env.update(
            LOG_FORMAT="json",
            DRAIN_DELAY=str(self.args.drain_delay),
            SHUTDOWN_TIMEOUT=str(self.args.shutdown_timeout),
        )
        if slot is not None:
            env.update(
                HTTP_HOST="127.0.0.1",
                HTTP_PORT=str(slot.http_port),
                GRPC_HOST="127.0.0.1",
                GRPC_PORT=str(slot.grpc_port),
                ADMIN_HOST="127.0.0.1",
                ADMIN_PORT="0",  # not scraped here
            )
{%- if cookiecutter.use_consumer == "yes" %}
            env["CONSUMER_NAME"] = f"rollout-{slot.name}-{self.generation}"
{%- endif %}
        return env

    def spawn(
        self, command: Sequence[str], env: dict[str, str], log: str
    ) -> subprocess.Popen[bytes]:
        with (self.work / log).open("ab") as output:
            process = subprocess.Popen(
                list(command),
                cwd=self.work,  # no .env file here
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def log_tail(self, log: str, lines: int = 30) -> str:
        path = self.work / log
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def start_haproxy(self) -> None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise SystemExit(
                "rollout check: haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)"
            )
        config = self.work / "haproxy.cfg"
        config.write_text(
            haproxy_config(self.slots, self.http_front, self.grpc_front, self.sock),
            encoding="utf-8",
        )
        checked = await run_command([haproxy, "-c", "-q", "-f", str(config)], self.work, None)
        if checked[0] != 0:
            raise SystemExit(f"rollout check: bad HAProxy config:\n{checked[1]}")
        self.haproxy = self.spawn(
            [haproxy, "-db", "-f", str(config)], dict(os.environ), "haproxy.log"
        )
        while not self.sock.exists():
            self.remaining()
            await asyncio.sleep(0.05)

    async def wait_states(self, wanted: dict[str, str]) -> None:
        """Until HAProxy reports each server name in `wanted` with that status, in every backend."""
        while True:
            states = await haproxy_states(self.sock)
            if all(
                status == wanted[server]
                for (_, server), status in states.items()
                if server in wanted
            ):
                return
            if self.haproxy is not None and self.haproxy.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{self.log_tail('haproxy.log')}")
            self.remaining()
            await asyncio.sleep(0.02)

    async def start_replica(self, slot: Slot) -> tuple[subprocess.Popen[bytes], float]:
        self.generation += 1
        log = f"replica-{slot.name}.log"
        process = self.spawn(self.command, self.env(slot), log)
        self.running[slot.index] = process
        started = time.monotonic()
        url = f"http://127.0.0.1:{slot.http_port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"replica {slot.name} exited {process.returncode} at start:\n"
                        f"{self.log_tail(log)}"
                    )
                self.remaining()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return process, time.monotonic() - started
                await asyncio.sleep(0.05)

    async def stop_replica(self, slot: Slot) -> tuple[int, float, float]:
        """SIGTERM the replica; (exit code, seconds until out of the balancer, seconds to exit)."""
        process = self.running.pop(slot.index)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await self.wait_states({slot.name: "DOWN"})
        out_of_balancer = time.monotonic() - signalled
        limit = self.args.shutdown_timeout + 5
        while process.poll() is None:
            if time.monotonic() - signalled > limit:
                process.kill()
                await asyncio.sleep(0.1)
                return -9, out_of_balancer, time.monotonic() - signalled
            self.remaining()
            await asyncio.sleep(0.02)
        return process.returncode, out_of_balancer, time.monotonic() - signalled

    async def http_load(self, worker: int) -> None:
        url = f"http://127.0.0.1:{self.http_front}/v1/echo"
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection per worker
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            sequence = 0
            while not self.stop_load.is_set():
                sequence += 1
                message = f"h{worker}-{sequence}"
                params = {"msg": message, "delay_ms": str(self.args.delay_ms)}
                self.report.requests["http"] += 1
                try:
                    async with session.get(url, params=params) as response:
                        body = await response.json(content_type=None)
                        if response.status != 200 or body != {"msg": message}:
                            self.report.failed("http", f"{response.status} {body}")
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    self.report.failed("http", repr(error))
{%- if cookiecutter.use_grpc == "yes" %}

    async def grpc_load(self, worker: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_front}") as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            sequence = 0
            while not self.stop_load.is_set():
                sequence += 1
                message = f"g{worker}-{sequence}"
                request = echo_pb2.EchoRequest(message=message, delay_ms=self.args.delay_ms)
                self.report.requests["grpc"] += 1
                try:
                    reply = await stub.Echo(request, timeout=10)
                    if reply.message != message:
                        self.report.failed("grpc", f"wrong reply {reply.message!r}")
                except grpc.aio.AioRpcError as error:
                    self.report.failed("grpc", f"{error.code().name} {error.details()}")
{%- endif %}

    async def websocket_client(self, worker: int) -> None:
        """Echo over a WebSocket; after each close frame, reconnect (through the balancer)."""
        url = f"http://127.0.0.1:{self.http_front}/v1/echo/ws"
        async with aiohttp.ClientSession() as session:
            while not self.stop_load.is_set():
                try:
                    async with session.ws_connect(url) as ws:
                        self.report.streams["ws_sessions"] += 1
                        await self.echo_until_closed(ws, worker)
                except (aiohttp.ClientError, TimeoutError) as error:
                    self.report.failed("websocket", repr(error))
                    await asyncio.sleep(0.1)

    async def echo_until_closed(self, ws: aiohttp.ClientWebSocketResponse, worker: int) -> None:
        sequence = 0
        while not self.stop_load.is_set():
            sequence += 1
            message = f"w{worker}-{sequence}"
            with contextlib.suppress(ConnectionResetError):  # closing: the close frame is due
                await ws.send_str(message)
            reply = await ws.receive(timeout=10)
            if reply.type is aiohttp.WSMsgType.TEXT:
                if reply.data != message:
                    self.report.failed("websocket", f"echo {reply.data!r} for {message!r}")
                await asyncio.sleep(self.args.delay_ms / 1000)
                continue
            if reply.type is aiohttp.WSMsgType.CLOSE and reply.data == SERVICE_RESTART:
                self.report.streams["ws_close_frames"] += 1
            else:
                self.report.streams["ws_abnormal_closes"] += 1
                self.report.failed("websocket", f"{reply.type.name} {reply.data} {reply.extra}")
            return

    async def sse_subscriber(self) -> None:
        """Follow the item events; reconnect with Last-Event-ID whenever the stream ends."""
        url = f"http://127.0.0.1:{self.http_front}/v1/items/events"
        last_event_id: str | None = None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
                retry_ms = 100
                try:
                    async with session.get(url, headers=headers) as response:
                        if response.status != 200:
                            self.report.failed("sse", f"{response.status} {await response.text()}")
                            await asyncio.sleep(0.1)
                            continue
                        self.report.streams["sse_connections"] += 1
                        self.subscribed.set()
                        final = False
                        async for block in sse_blocks(response):
                            event = block.get("event")
                            if event == "item.created":
                                last_event_id = block["id"]
                                self.in_order(last_event_id)
                                self.received_ids[last_event_id] += 1
                                self.received[json.loads(block["data"])["item"]["id"]] += 1
                                self.report.streams["sse_events"] += 1
                            elif event == "shutdown":
                                final = True
                                retry_ms = int(block.get("retry", retry_ms))
                                self.report.streams["sse_final_events"] += 1
                            elif event == "reset":
                                self.report.failed("sse", f"reset: {block.get('data')}")
                        if not final:
                            self.report.failed("sse", "the stream ended without a final event")
                except (aiohttp.ClientError, TimeoutError) as error:
                    self.report.failed("sse", repr(error))
                await asyncio.sleep(retry_ms / 1000)

    def in_order(self, entry_id: str) -> None:
        """Count an event whose id is below one already received (a duplicate is counted as
        such, not here): the stream's order is the order of its entry ids."""
        key = entry_key(entry_id)
        if key < self.newest_received and entry_id not in self.received_ids:
            self.report.streams["sse_out_of_order"] += 1
            newest = "-".join(map(str, self.newest_received))
            self.report.failed("sse", f"out of order: entry {entry_id} after {newest}")
        self.newest_received = max(self.newest_received, key)

    async def item_creator(self) -> None:
        url = f"http://127.0.0.1:{self.http_front}/v1/items"
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            sequence = 0
            while not self.stop_load.is_set():
                sequence += 1
                self.report.requests["items"] += 1
                try:
                    item = {"name": f"rollout-{sequence}", "quantity": 1}
                    async with session.post(url, json=item) as response:
                        body = await response.json(content_type=None)
                        if response.status == 201:
                            self.created.append(int(body["id"]))
                        else:
                            self.report.failed("items", f"{response.status} {body}")
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    self.report.failed("items", repr(error))
                await asyncio.sleep(self.args.delay_ms / 1000)

    async def sse_settle(self, subscriber: asyncio.Task[None]) -> None:
        """Give the subscriber the last items (bounded), stop it, count gaps and duplicates."""
        for _ in range(int(SSE_CATCH_UP_S / 0.05)):
            if set(self.created) <= set(self.received):
                break
            await asyncio.sleep(0.05)
        subscriber.cancel()
        await asyncio.gather(subscriber, return_exceptions=True)
        self.report.streams["items_created"] = len(self.created)
        gaps = [item for item in self.created if item not in self.received]
        duplicates = {entry: count for entry, count in self.received_ids.items() if count > 1}
        self.report.streams["sse_gaps"] = len(gaps)
        self.report.streams["sse_duplicates"] = sum(count - 1 for count in duplicates.values())
        self.report.streams["sse_out_of_order"] += 0  # counted as they came; listed even if 0
        for item in gaps:
            self.report.failed("sse", f"gap: item {item} never arrived")
        for entry, count in duplicates.items():
            self.report.failed("sse", f"duplicate: entry {entry} arrived {count} times")

    async def run(self) -> Report:
        began = time.monotonic()
        if MIGRATE:
            code, output = await run_command([*self.command, "migrate"], self.work, self.env())
            if code != 0:
                raise RuntimeError(f"migrate exited {code}:\n{output}")
        await self.start_haproxy()
        replicas = self.slots[:2]
        await asyncio.gather(*(self.start_replica(slot) for slot in replicas))
        await self.wait_states(
            {slot.name: "UP" for slot in replicas} | {self.slots[2].name: "DOWN"}
        )

        load = [asyncio.create_task(self.http_load(i)) for i in range(self.args.http_workers)]
{%- if cookiecutter.use_grpc == "yes" %}
        load += [asyncio.create_task(self.grpc_load(i)) for i in range(self.args.grpc_workers)]
{%- endif %}
        load += [
            asyncio.create_task(self.websocket_client(i))
            for i in range(self.args.websocket_workers)
        ]
        subscriber = asyncio.create_task(self.sse_subscriber()) if ITEMS else None
        if subscriber is not None:
            async with asyncio.timeout(self.remaining()):
                await self.subscribed.wait()  # before the first item: it starts at the end
            load.append(asyncio.create_task(self.item_creator()))
        try:
            await asyncio.sleep(self.args.settle)
            for _ in range(self.args.rounds):
                for _ in range(len(replicas)):
                    await self.restart_one()
            await asyncio.sleep(self.args.settle)
        finally:
            self.stop_load.set()
            await asyncio.wait(load, timeout=15)
            for task in load:
                task.cancel()
            if subscriber is not None:
                await self.sse_settle(subscriber)
        self.report.duration_s = time.monotonic() - began
        return self.report

    async def restart_one(self) -> None:
        # The oldest replica goes; its replacement takes the free slot.
        old_index = min(self.running, key=lambda index: self.processes.index(self.running[index]))
        free = next(slot for slot in self.slots if slot.index not in self.running)
        old = self.slots[old_index]
        restart = Restart(replica=old.name, replacement=free.name)
        started = time.monotonic()
        _, restart.ready_s = await self.start_replica(free)
        await self.wait_states({free.name: "UP"})
        restart.in_balancer_s = time.monotonic() - started
        restart.exit_code, restart.out_of_balancer_s, restart.exit_s = await self.stop_replica(old)
        self.report.restarts.append(restart)

    def cleanup(self) -> None:
        """Stop every process this script started (by its own PID), haproxy last."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=self.args.shutdown_timeout + 2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rollout_check", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=3, help="restarts per replica (3)")
    parser.add_argument("--drain-delay", type=float, default=2.0, help="replicas' DRAIN_DELAY (2)")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0, help="SHUTDOWN_TIMEOUT")
    parser.add_argument("--http-workers", type=int, default=8, help="keep-alive HTTP clients")
    parser.add_argument("--grpc-workers", type=int, default=8, help="concurrent gRPC callers")
    parser.add_argument("--websocket-workers", type=int, default=4, help="WebSocket clients")
    parser.add_argument("--delay-ms", type=int, default=20, help="server time per request")
    parser.add_argument("--settle", type=float, default=1.0, help="load before/after, seconds")
    parser.add_argument("--timeout", type=float, default=180.0, help="whole check, seconds")
    parser.add_argument("--expect-failures", action="store_true", help="succeed only on failures")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy HAProxy and replica logs here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rollout-") as scratch:
        rollout = Rollout(args, Path(scratch))
        try:
            report = asyncio.run(rollout.run())
        finally:
            rollout.cleanup()
            if args.keep_logs is not None:
                shutil.copytree(
                    scratch,
                    args.keep_logs,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.sock"),
                )
    print(report.text())
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    clean_exits = all(restart.exit_code == 0 for restart in report.restarts)
    if args.expect_failures:
        ok = report.total_failures > 0
        print("expected failures:", "seen" if ok else "NONE SEEN (the check is blind)")
    else:
        ok = report.total_failures == 0 and clean_exits
        print("zero downtime:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
