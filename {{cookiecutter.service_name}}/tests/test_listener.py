"""The HTTP listener: a burst of connections is accepted at once, on either event loop."""

from __future__ import annotations

import asyncio
import errno
import importlib
import importlib.util
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from typing_extensions import override

from {{ cookiecutter.package_name }}.platform import listener as listener_module
from {{ cookiecutter.package_name }}.platform.listener import Listener

from .support import wait_until as until

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
"""uvloop where the service has it: its libuv accepts one connection per loop iteration."""


def run_on(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop":
        factory = importlib.import_module("uvloop").new_event_loop  # only where installed
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(scenario(), 20))


class Recorder(asyncio.Protocol):
    """Counts the connections handed to the protocol factory."""

    made: list[asyncio.BaseTransport]

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


def recording_factory() -> tuple[Callable[[], asyncio.Protocol], list[asyncio.BaseTransport]]:
    made: list[asyncio.BaseTransport] = []

    def factory() -> asyncio.Protocol:
        protocol = Recorder()
        protocol.made = made
        return protocol

    return factory, made


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_burst_of_connections_is_accepted_in_one_go(loop_name: str) -> None:
    async def scenario() -> None:
        factory, made = recording_factory()
        listener = Listener(factory, "127.0.0.1", 0, backlog=256)
        wakeups: list[int] = []
        accept_pending = listener._accept_pending

        def counting() -> None:
            before = len(listener._connecting) + len(made)
            accept_pending()
            wakeups.append(len(listener._connecting) + len(made) - before)

        listener._accept_pending = counting  # type: ignore[method-assign]
        listener.start()
        # 64 clients connect before the loop runs again: the kernel completes the handshakes
        # and queues them all in the backlog.
        clients = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(64)]
        try:
            await until(lambda: len(made) == 64)
            accepted = [count for count in wakeups if count]
            assert sum(accepted) == 64
            assert len(accepted) <= 2, wakeups  # libuv alone: 64 loop iterations, one each
        finally:
            listener.close()
            for client in clients:
                client.close()
            for transport in made:
                transport.close()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_close_refuses_new_connections_and_keeps_open_ones(loop_name: str) -> None:
    async def scenario() -> None:
        factory, made = recording_factory()
        listener = Listener(factory, "127.0.0.1", 0, backlog=16)
        listener.start()
        port = listener.port
        client = socket.create_connection(("127.0.0.1", port))
        try:
            await until(lambda: len(made) == 1)
            listener.close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            assert not made[0].is_closing()  # the open connection is aiohttp's to close
        finally:
            client.close()
            made[0].close()

    run_on(loop_name, scenario)


def test_an_address_in_use_fails_the_start() -> None:
    async def scenario() -> None:
        factory, _ = recording_factory()
        first = Listener(factory, "127.0.0.1", 0, backlog=16)
        first.start()
        try:
            second = Listener(factory, "127.0.0.1", first.port, backlog=16)
            with pytest.raises(OSError, match=r"(?i)address already in use"):
                second.start()
        finally:
            first.close()

    run_on("asyncio", scenario)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        raise AssertionError("this machine has no IPv6; the service supports it")

    async def scenario() -> None:
        factory, made = recording_factory()
        listener = Listener(factory, "::1", 0, backlog=16)
        listener.start()
        client = socket.create_connection(("::1", listener.port))
        try:
            await until(lambda: len(made) == 1)
        finally:
            listener.close()
            client.close()
            made[0].close()

    run_on("asyncio", scenario)


def test_out_of_file_descriptors_pauses_accepting_then_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE leaves the connection in the backlog: accepting stops for a while (a readable
    socket would otherwise spin the loop) and resumes by itself."""
    monkeypatch.setattr(listener_module, "RETRY_AFTER_S", 0.2)

    class OutOfDescriptorsOnce:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock
            self.failures = 0

        def accept(self) -> tuple[socket.socket, Any]:
            if not self.failures:
                self.failures += 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.sock.accept()

        def fileno(self) -> int:
            return self.sock.fileno()

    async def scenario() -> None:
        factory, made = recording_factory()
        listener = Listener(factory, "127.0.0.1", 0, backlog=16)
        listener.start()
        real = listener._sock
        assert real is not None
        port = listener.port
        flaky = OutOfDescriptorsOnce(real)
        listener._sock = flaky  # type: ignore[assignment]
        client = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        try:
            await until(lambda: len(made) == 1)
            assert flaky.failures == 1
            assert time.monotonic() - started >= 0.15  # paused, not spinning
        finally:
            listener._sock = real
            listener.close()
            client.close()
            for transport in made:
                transport.close()

    run_on("asyncio", scenario)
