"""The admin HTTP server: metrics and task stacks, on a port of its own (never the public one).

It serves through the whole shutdown (its only phase is `close`), so a scrape or a look at
`/debug/tasks` still answers while the service drains. `/debug/tasks` shows the code's internals
(every task's name and stack): it is served only with DEBUG_TASKS=true; SIGUSR1 logs the same.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from typing_extensions import override

from .lifecycle import Component, live_tasks
from .logs import log
from .metrics import refresh_all
from .settings import Settings


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format 0.0.4 (every Prometheus reads it); figures that need a round trip
    are refreshed first, bounded."""
    await refresh_all()
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def debug_tasks(request: web.Request) -> web.Response:
    """Every live asyncio task, by name, with the chain of awaits it is suspended in."""
    return web.json_response({"tasks": live_tasks()})


def create_admin_app(settings: Settings) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if settings.debug_tasks:
        app.router.add_get("/debug/tasks", debug_tasks)
    return app


class AdminServer(Component):
    name = "admin"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runner = web.AppRunner(
            create_admin_app(settings), handle_signals=False, access_log=None, shutdown_timeout=0.5
        )

    @property
    def port(self) -> int:
        """The bound port (useful when ADMIN_PORT=0)."""
        addresses = self._runner.addresses
        return int(addresses[0][1]) if addresses else self._settings.admin_port

    @override
    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.admin_host, self._settings.admin_port)
        await site.start()
        log.info("admin_listening", host=self._settings.admin_host, port=self.port)

    @override
    async def close(self) -> None:
        await self._runner.cleanup()
