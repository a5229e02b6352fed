"""Assembly: which components the service has, in start order. Add yours here (one line)."""

from __future__ import annotations

from structlog.types import Processor

from .admin_server import AdminServer
{% if cookiecutter.use_consumer == "yes" -%}
from .consumer import StreamConsumer
{% endif -%}
{% if cookiecutter.use_postgres == "yes" -%}
from .db import PostgresPool
{% endif -%}
{% if cookiecutter.use_grpc == "yes" -%}
from .grpc_server import GrpcServer, GrpcService
{% endif -%}
from .http_server import HttpRoutes, HttpServer
{% if cookiecutter.use_postgres == "yes" -%}
{% if cookiecutter.use_consumer == "yes" -%}
from .items import ITEM_CREATED, ItemStore, on_item_created, on_items_created
{% else -%}
from .items import ItemStore
{% endif -%}
from .items_events import ItemEvents, item_event_routes
{% if cookiecutter.use_grpc == "yes" -%}
from .items_grpc import item_service
{% endif -%}
from .items_http import item_routes
{% endif -%}
from .lifecycle import Component
{% if cookiecutter.use_postgres == "yes" -%}
from .outbox import OutboxRelay
{% endif -%}
from .readiness import Readiness
{% if cookiecutter.use_redis == "yes" -%}
from .redis_client import RedisClient
{% endif -%}
from .settings import Settings
{% if cookiecutter.use_tracing == "yes" -%}
from .tracing import Tracing, add_trace_ids
{% endif %}
LOG_PROCESSORS: tuple[Processor, ...] = ({% if cookiecutter.use_tracing == "yes" %}add_trace_ids,{% endif %})
"""Run on every log line before rendering{% if cookiecutter.use_tracing == "yes" %} (trace and span ids){% endif %}."""


def build_components(settings: Settings, readiness: Readiness) -> list[Component]:
    """Started in this order, closed in reverse: dependencies first, servers last.

    The admin server comes right after the pools: it takes part in no phase before `close`, so
    metrics and task stacks are served through the whole shutdown, and in `close` it goes
    after everything but the pools."""
    components: list[Component] = []
{%- if cookiecutter.use_tracing == "yes" %}
    tracing = Tracing(settings)  # first: it instruments the libraries the others use
    components.append(tracing)
{%- endif %}
    http_routes: list[HttpRoutes] = []
{%- if cookiecutter.use_grpc == "yes" %}
    grpc_services: list[GrpcService] = []
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
    items = ItemStore(db, redis, settings{% if cookiecutter.use_tracing == "yes" %}, tracing.events{% endif %})
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
