"""The HTTP listening socket: every pending connection is accepted as soon as it is readable.

aiohttp's `TCPSite` leaves accepting to the event loop. uvloop's libuv accepts one connection per
loop iteration (libuv/libuv#3696), and between two accepts a busy replica answers every
connection it already has: a burst of new connections, such as the clients of a replica that is
draining moving over, gets in one round of requests at a time (~75 ms for 32 connections here,
docs/benchmarks.md). asyncio accepts up to its backlog at once; this does the same on both.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from .logs import log

RETRY_AFTER_S = 1.0
"""Out of file descriptors (or memory): stop accepting this long, as asyncio does, rather than
spin on a socket that stays readable."""

_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

_Connected = tuple[asyncio.Transport, asyncio.Protocol]


class Listener:
    """Binds `host:port`, accepts connections into `protocol_factory` (aiohttp's `web.Server`)
    until `close`."""

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        backlog: int,
    ) -> None:
        self._protocol_factory = protocol_factory
        self._host = host
        self._port = port
        self._backlog = backlog
        self._sock: socket.socket | None = None
        self._connecting: set[asyncio.Task[_Connected]] = set()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock is not None else self._port

    def start(self) -> None:
        """Bind and listen (OSError if the address is in use), then accept in the background."""
        ipv6 = ":" in self._host
        sock = socket.create_server(
            (self._host, self._port),
            family=socket.AF_INET6 if ipv6 else socket.AF_INET,
            backlog=self._backlog,
            dualstack_ipv6=ipv6 and self._host == "::" and socket.has_dualstack_ipv6(),
        )
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_pending)

    def close(self) -> None:
        """Stop accepting and close the socket: new connections are refused from now on.
        Connections already accepted are aiohttp's to serve and close."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _accept_pending(self) -> None:
        sock = self._sock
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(self._backlog):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nothing left to accept
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as error:
                if error.errno not in _RESOURCE_ERRORS:
                    raise
                log.warning("http_accept_paused", error=str(error), retry_in_s=RETRY_AFTER_S)
                loop.remove_reader(sock.fileno())
                loop.call_later(RETRY_AFTER_S, self._resume, sock)
                return
            connection.setblocking(False)
            task = loop.create_task(
                loop.connect_accepted_socket(self._protocol_factory, connection)
            )
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _resume(self, sock: socket.socket) -> None:
        if self._sock is sock:  # not closed in the meantime
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_pending)

    def _connected(self, task: asyncio.Task[_Connected]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The client reset the connection before its transport was set up: nothing to serve.
            log.debug("http_connection_failed", error=repr(error))
