"""Baseline: the service's `POST /v1/items` handler on a plain aiohttp app, nothing around it.

`python -m bench.baseline_items PORT` (configured by the same environment variables as the
service) runs the same dependencies and background components as the service (Postgres pool,
Redis client, outbox relay, consumer) and the same handlers, imported from the service, on a
`web.Application()` served by `web.run_app` with its defaults (aiohttp's access log, written
through the same logging configuration): the service's per-request work (`http_server.Routes`)
and its lifecycle are missing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from {{ cookiecutter.package_name }}.items.routes import ITEMS, create_item, get_item
from {{ cookiecutter.package_name }}.items.settings import ItemsSettings
{%- if cookiecutter.use_consumer == "yes" %}
from {{ cookiecutter.package_name }}.items.store import (
    ITEM_CREATED,
    ItemStore,
    on_item_created,
)
from {{ cookiecutter.package_name }}.platform.consumer import (
    ConsumerSettings,
    StreamConsumer,
)
{%- else %}
from {{ cookiecutter.package_name }}.items.store import ItemStore
{%- endif %}
from {{ cookiecutter.package_name }}.platform.db import (
    PostgresPool,
    PostgresSettings,
)
from {{ cookiecutter.package_name }}.platform.http_server import SETTINGS
from {{ cookiecutter.package_name }}.platform.lifecycle import Component
from {{ cookiecutter.package_name }}.platform.logs import configure_logging
from {{ cookiecutter.package_name }}.platform.outbox import OutboxRelay, OutboxSettings
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.redis_client import (
    RedisClient,
    RedisSettings,
)
from {{ cookiecutter.package_name }}.platform.settings import Settings

READINESS = web.AppKey("readiness", Readiness)


class BenchSettings(
    Settings,
    PostgresSettings,
    RedisSettings,
    OutboxSettings,
{%- if cookiecutter.use_consumer == "yes" %}
    ConsumerSettings,
{%- endif %}
):
    """Every variable the baseline's components read, in one object."""


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[READINESS].ready
    return web.json_response({"ready": ready}, status=200 if ready else 503)


def create_app(settings: BenchSettings) -> web.Application:
    readiness = Readiness()
    db = PostgresPool(settings, settings, readiness)
    cache = RedisClient(settings, settings, readiness)
    store = ItemStore(db, cache, settings, ItemsSettings())
    components: list[Component] = [
        db,
        cache,
        OutboxRelay(db, cache, settings, settings),
{%- if cookiecutter.use_consumer == "yes" %}
        StreamConsumer(db, cache, settings, settings, settings, {ITEM_CREATED: on_item_created}),
{%- endif %}
    ]

    async def run_components(app: web.Application) -> AsyncIterator[None]:
        for component in components:
            await component.start()
        await readiness.mark_started()
        yield
        for step in ("close_listeners", "drain", "stop_tasks", "close"):
            for component in reversed(components):
                await asyncio.wait_for(getattr(component, step)(), timeout=5)

    app = web.Application()
    app[SETTINGS] = settings
    app[READINESS] = readiness
    app.cleanup_ctx.append(run_components)
    app[ITEMS] = store
    app.router.add_post("/v1/items", create_item)
    app.router.add_get("/v1/items/{item_id}", get_item)
    app.router.add_get("/readyz", readyz)
    return app


async def drop_isolated(settings: BenchSettings) -> None:
    """Remove what a run created: its schema, streams and cache keys (names from the env)."""
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE')
    finally:
        await connection.close()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        # Without the consumer there is no dead-letter stream setting; its key may not exist.
        dead_letter = getattr(settings, "dead_letter_stream", settings.events_stream)
        await client.delete(settings.events_stream, dead_letter)
        async for key in client.scan_iter(match=f"{ItemsSettings().prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def main() -> None:
    """`python -m bench.baseline_items PORT` serves; `... drop` removes the run's data."""
    settings = BenchSettings()
    if sys.argv[1] == "drop":
        if settings.database_schema == "public":
            raise SystemExit("refusing to drop the public schema")
        asyncio.run(drop_isolated(settings))
        return
    configure_logging(settings.log_level, "json")
    # `web.run_app`'s defaults, its access log included: with logging configured at the
    # service's level (info), aiohttp writes a line per request through `logging`, as a plain
    # app with JSON logs ships (the 1.27x was measured this way).
    app = create_app(settings)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
