"""The one door between the platform and the service's own features: which components the
service has, in start order, and which routes, RPCs, effects and migrations its features add.
Add yours here (one line each)."""

from __future__ import annotations

from pathlib import Path

from structlog.types import Processor

from .echo.routes import echo_routes
{% if cookiecutter.use_grpc == "yes" -%}
from .echo.rpc import echo_service
{% endif -%}
from .echo.settings import EchoSettings
{% if cookiecutter.use_postgres == "yes" -%}
from .items.events import ItemEvents, item_event_routes
from .items.routes import item_routes
{% if cookiecutter.use_grpc == "yes" -%}
from .items.rpc import item_service
{% endif -%}
from .items.settings import ItemsSettings
{% if cookiecutter.use_consumer == "yes" -%}
from .items.store import ITEM_CREATED, ItemStore, on_item_created, on_items_created
{% else -%}
from .items.store import ItemStore
{% endif -%}
{% endif -%}
from .platform.admin_server import AdminServer
{% if cookiecutter.use_consumer == "yes" -%}
from .platform.consumer import StreamConsumer
{% endif -%}
{% if cookiecutter.use_postgres == "yes" -%}
from .platform.db import PostgresPool
{% endif -%}
{% if cookiecutter.use_grpc == "yes" -%}
from .platform.grpc_server import GrpcServer, GrpcService
{% endif -%}
from .platform.http_server import HttpRoutes, HttpServer
from .platform.lifecycle import Component
{% if cookiecutter.use_postgres == "yes" -%}
from .platform.outbox import OutboxRelay
{% endif -%}
from .platform.readiness import Readiness
{% if cookiecutter.use_redis == "yes" -%}
from .platform.redis_client import RedisClient
{% endif -%}
from .platform.settings import Config, Settings, SettingsGroup
{% if cookiecutter.use_tracing == "yes" -%}
from .platform.tracing import Tracing, add_trace_ids
{% endif %}
SETTINGS: tuple[type[SettingsGroup], ...] = (EchoSettings,{% if cookiecutter.use_postgres == "yes" %} ItemsSettings{% endif %})
"""The features' settings groups, read and checked with the platform's before anything starts."""

LOG_PROCESSORS: tuple[Processor, ...] = ({% if cookiecutter.use_tracing == "yes" %}add_trace_ids,{% endif %})
"""Run on every log line before rendering{% if cookiecutter.use_tracing == "yes" %} (trace and span ids){% endif %}."""

MIGRATIONS: tuple[Path, ...] = ({% if cookiecutter.use_postgres == "yes" %}Path(__file__).parent / "items" / "migrations",{% endif %})
"""The features' migration directories, applied in this order after the platform's own."""


def build_components(config: Config, readiness: Readiness) -> list[Component]:
    """Started in this order, closed in reverse: dependencies first, servers last.

    The admin server comes right after the pools: it takes part in no phase before `close`, so
    metrics and task stacks are served through the whole shutdown, and in `close` it goes
    after everything but the pools."""
    settings = config[Settings]
    echo = config[EchoSettings]
    components: list[Component] = []
{%- if cookiecutter.use_tracing == "yes" %}
    tracing = Tracing(settings)  # first: it instruments the libraries the others use
    components.append(tracing)
{%- endif %}
    http_routes: list[HttpRoutes] = [echo_routes(echo.max_delay_ms)]
{%- if cookiecutter.use_grpc == "yes" %}
    grpc_services: list[GrpcService] = [echo_service(echo.max_delay_ms)]
{%- endif %}
{%- if cookiecutter.use_postgres == "yes" %}
    db = PostgresPool(settings, readiness)
    components.append(db)
{%- endif %}
{%- if cookiecutter.use_redis == "yes" %}
    redis = RedisClient(settings, readiness)
    components.append(redis)
{%- endif %}
    components.append(AdminServer(settings))
{%- if cookiecutter.use_postgres == "yes" %}
    items = ItemStore(db, redis, settings, config[ItemsSettings]{% if cookiecutter.use_tracing == "yes" %}, tracing.events{% endif %})
    components.append(OutboxRelay(db, redis, settings))
    http_routes.append(item_routes(items))
    item_events = ItemEvents(redis, settings, readiness)
    components.append(item_events)
    http_routes.append(item_event_routes(item_events))
{%- if cookiecutter.use_grpc == "yes" %}
    grpc_services.append(item_service(items, settings))
{%- endif %}
{%- endif %}
{%- if cookiecutter.use_consumer == "yes" %}
    components.append(
        StreamConsumer(
            db,
            redis,
            settings,
            {ITEM_CREATED: on_item_created},
{%- if cookiecutter.use_tracing == "yes" %}
            tracing.events,
{%- endif %}
            group_handlers={ITEM_CREATED: on_items_created},
        )
    )
{%- endif %}

    components.append(HttpServer(settings, readiness, http_routes))
{%- if cookiecutter.use_grpc == "yes" %}
    components.append(GrpcServer(settings, readiness, grpc_services))
{%- endif %}
    return components
