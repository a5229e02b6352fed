"""What the items tests share: the Postgres and Redis components started in-process on an isolated
schema, a TCP proxy that can be down, and a throwaway redis-server the test owns."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as redis

from {{ cookiecutter.package_name }}.app import MIGRATIONS
from {{ cookiecutter.package_name }}.items.settings import ItemsSettings
from {{ cookiecutter.package_name }}.items.store import ItemStore
from {{ cookiecutter.package_name }}.platform.db import PostgresPool
from {{ cookiecutter.package_name }}.platform.migrations import migrate
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
from {{ cookiecutter.package_name }}.platform.redis_client import RedisClient

from .service import AllSettings, drop_isolated, free_port, isolated_names
from .support import wait_until

POSTGRES = ("127.0.0.1", 5432)
DEFAULT_DATABASE_URL: str = AllSettings.model_fields["database_url"].default
DEFAULT_REDIS_URL: str = AllSettings.model_fields["redis_url"].default
USE_CONSUMER = {{ "True" if cookiecutter.use_consumer == "yes" else "False" }}
FAST = {"DRAIN_DELAY": "0.5", "SHUTDOWN_TIMEOUT": "10", "DEPENDENCY_MAX_BACKOFF": "0.5"}
"""Service settings for subprocess tests: short waits."""
{%- if cookiecutter.use_consumer == "yes" %}
FAST_CONSUMER = {"CONSUMER_BLOCK_MS": "300"}
{%- else %}
FAST_CONSUMER: dict[str, str] = {}
{%- endif %}


def isolated_settings(**overrides: Any) -> AllSettings:
    """AllSettings on a schema, streams and keys of their own (plus `overrides`)."""
    names = {key.lower(): value for key, value in isolated_names().items()}
    return AllSettings(**{"dependency_max_backoff": 0.2, **names, **overrides})


def isolated_cache(settings: AllSettings) -> ItemsSettings:
    """The item cache's settings of `settings`' isolated names (`isolated_names`: one tag)."""
    return ItemsSettings(prefix=f"test:{settings.database_schema.removeprefix('test_')}:")


def isolated_env(settings: AllSettings) -> dict[str, str]:
    """The environment `drop_isolated` needs to remove what `settings` created (on the shared
    servers: a proxy or a throwaway Redis is gone by then)."""
    return {
        "DATABASE_URL": DEFAULT_DATABASE_URL,
        "REDIS_URL": DEFAULT_REDIS_URL,
        "DATABASE_SCHEMA": settings.database_schema,
        "EVENTS_STREAM": settings.events_stream,
        "DEAD_LETTER_STREAM": getattr(settings, "dead_letter_stream", settings.events_stream),
        "CACHE_PREFIX": isolated_cache(settings).prefix,
    }


class Backend:
    """The items store over real components, as the service assembles them."""

    def __init__(self, settings: AllSettings) -> None:
        self.settings = settings
        self.readiness = Readiness()
        self.db = PostgresPool(settings, settings, self.readiness)
        self.redis = RedisClient(settings, settings, self.readiness)
        self.cache = isolated_cache(settings)
        self.store = ItemStore(self.db, self.redis, settings, self.cache)

    async def start(self) -> None:
        for component in (self.db, self.redis):
            await component.start()
        await self.readiness.mark_started()

    async def wait_ready(self, within: float = 15.0) -> None:
        await wait_until(lambda: self.readiness.ready, "backend ready", within)

    async def close(self) -> None:
        for component in (self.db, self.redis):
            await component.stop_tasks()
        await asyncio.gather(self.db.close(), self.redis.close())

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """A query on a connection of the test's own, on the isolated schema."""
        connection = await connect_schema(self.settings)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()


async def connect_schema(settings: AllSettings) -> asyncpg.Connection:
    return await asyncpg.connect(
        DEFAULT_DATABASE_URL, server_settings={"search_path": settings.database_schema}
    )


@asynccontextmanager
async def started_backend(**overrides: Any) -> AsyncIterator[Backend]:
    """Migrate a fresh schema, start the components, wait until connected; clean up after."""
    settings = isolated_settings(**overrides)
    await migrate(settings.model_copy(update={"database_url": DEFAULT_DATABASE_URL}), MIGRATIONS)
    backend = Backend(settings)
    try:
        await backend.start()
        await backend.wait_ready()
        yield backend
    finally:
        await backend.close()
        drop_isolated(isolated_env(settings))


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`, on a thread of its own (tests may block their
    loop). Down (nothing listening) until `up()`; `down()` closes the listener and every
    forwarded connection."""

    def __init__(self, target: tuple[str, int] = POSTGRES) -> None:
        self.port = free_port()
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def up(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._call(listen())

    def down(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.close()

        self._call(close())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )
        self._writers -= {writer, upstream_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextmanager
def tcp_proxy(target: tuple[str, int] = POSTGRES) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()


async def query(env: dict[str, str], sql: str, *args: Any) -> list[asyncpg.Record]:
    """A query on the schema of a service's environment."""
    connection = await asyncpg.connect(
        DEFAULT_DATABASE_URL, server_settings={"search_path": env["DATABASE_SCHEMA"]}
    )
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def stream_item_ids(env: dict[str, str], url: str = DEFAULT_REDIS_URL) -> Counter[int]:
    """How many item.created events the stream holds, per item id."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = await client.xrange(env["EVENTS_STREAM"]) or []
    finally:
        await client.aclose()
    return Counter(
        int(json.loads(fields["payload"])["item_id"])
        for _, fields in entries
        if fields and fields.get("type") == "item.created"
    )


async def http_create(
    session: aiohttp.ClientSession, url: str, key: str
) -> tuple[int, dict[str, Any]]:
    """POST /v1/items named after its idempotency key: (status, JSON body)."""
    headers = {"Idempotency-Key": key, "Connection": "close"}
    body = {"name": key, "quantity": 1}
    async with session.post(f"{url}/v1/items", json=body, headers=headers) as response:
        return response.status, await response.json()


async def get_json(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Connection": "close"}) as response,
    ):
        return response.status, await response.json()


async def equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
