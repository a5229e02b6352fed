"""The items feature as app.py lists it: its settings, its migrations, the store over the data
option's pools, the live events feed, and their HTTP routes."""

from __future__ import annotations

from pathlib import Path

from ..platform.assembly import Assembly, Feature
from ..platform.db import PostgresPool
from ..platform.outbox import OutboxSettings
from ..platform.redis_client import RedisClient
from .events import ItemEvents, item_event_routes
from .routes import item_routes
from .settings import ItemsSettings
from .store import ItemStore


def _wire(assembly: Assembly) -> None:
    config, redis = assembly.config, assembly[RedisClient]
    outbox = config[OutboxSettings]
    store = ItemStore(assembly[PostgresPool], redis, outbox, config[ItemsSettings], assembly.events)
    assembly.provide(store)
    item_events = ItemEvents(redis, outbox, assembly.readiness)
    assembly.workers.append(item_events)
    assembly.http_routes += [item_routes(store), item_event_routes(item_events)]


ITEMS = Feature(
    "items",
    wire=_wire,
    settings=(ItemsSettings,),
    migrations=(Path(__file__).parent / "migrations",),
)
"""Needs the data option (listed before it); provides `ItemStore`."""
