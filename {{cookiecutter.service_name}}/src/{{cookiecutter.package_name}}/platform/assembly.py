"""How the service is put together: every option and feature is a `Feature` that app.py lists;
its `wire` adds components, routes and RPCs to the `Assembly`, which puts the components in the
order the lifecycle starts them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from structlog.types import Processor

from .admin_server import AdminServer
from .event_context import EventContext, NoEventContext
from .http_server import HttpRoutes, HttpServer
from .lifecycle import Component
from .readiness import Readiness
from .settings import Config, Settings, SettingsGroup

Part = TypeVar("Part")


class Assembly:
    """What the features wire, by role; `components` puts the roles in start order."""

    def __init__(self, config: Config, readiness: Readiness) -> None:
        self.config = config
        self.readiness = readiness
        self.settings = config[Settings]
        self.instrumentation: list[Component] = []
        """Built and started first: it instruments the libraries the others use (tracing)."""
        self.dependencies: list[Component] = []
        """The pools: started before everything that uses them, closed last."""
        self.workers: list[Component] = []
        """Background work: the outbox relay, event feeds, consumers."""
        self.http_routes: list[HttpRoutes] = []
        """What the HTTP server serves."""
        self.servers: list[Callable[[], Component]] = []
        """Servers besides HTTP (gRPC), built once every feature is wired: they serve what the
        features added."""
        self.events: EventContext = NoEventContext()
        """What travels with events: the trace context, once tracing is wired."""
        self._parts: dict[type, object] = {}

    def provide(self, part: object) -> None:
        """Share `part` (a pool, a store, ...) with the features wired after this one."""
        self._parts[type(part)] = part

    def __getitem__(self, kind: type[Part]) -> Part:
        """What an earlier feature provided: `assembly[PostgresPool]`."""
        try:
            return cast(Part, self._parts[kind])
        except KeyError:
            raise LookupError(
                f"no {kind.__name__}: list the feature that provides it first"
            ) from None

    def components(self) -> list[Component]:
        """Started in this order, closed in reverse: dependencies first, servers last.

        The admin server comes right after the pools: it takes part in no phase before `close`,
        so metrics and task stacks are served through the whole shutdown, and in `close` it goes
        after everything but the pools."""
        return [
            *self.instrumentation,
            *self.dependencies,
            AdminServer(self.settings),
            *self.workers,
            HttpServer(self.settings, self.readiness, self.http_routes),
            *(build() for build in self.servers),
        ]


def _nothing(assembly: Assembly) -> None:
    """Nothing to wire: the feature brings settings, log processors or migrations only."""


@dataclass(frozen=True)
class Feature:
    """An option of the platform or a feature of the service, as app.py lists it."""

    name: str
    wire: Callable[[Assembly], None] = _nothing
    """Adds the feature's components, routes and RPCs (in app.py's order)."""
    settings: tuple[type[SettingsGroup], ...] = ()
    """Its settings groups: read and checked with all others before anything starts."""
    log_processors: tuple[Processor, ...] = ()
    """Run on every log line before rendering."""
    migrations: tuple[Path, ...] = ()
    """Its migration directories (`migrate`), applied after the platform's own."""
