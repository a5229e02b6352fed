"""`GET /openapi.json`: a valid OpenAPI 3.1 document that names every route, and whose schemas
are what the service really answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from {{ cookiecutter.package_name }}.echo.routes import echo_routes
from {{ cookiecutter.package_name }}.echo.settings import EchoSettings
{% if cookiecutter.use_postgres == "yes" -%}
from {{ cookiecutter.package_name }}.items.events import ItemEvents, item_event_routes
from {{ cookiecutter.package_name }}.items.routes import item_routes
from {{ cookiecutter.package_name }}.items.settings import ItemsSettings
from {{ cookiecutter.package_name }}.items.store import ItemStore
from {{ cookiecutter.package_name }}.platform.db import (
    PostgresPool,
    PostgresSettings,
)
{% endif -%}
from {{ cookiecutter.package_name }}.platform.http_server import HttpRoutes, create_app
from {{ cookiecutter.package_name }}.platform.inflight import InFlight
from {{ cookiecutter.package_name }}.platform.openapi import ErrorBody
{% if cookiecutter.use_postgres == "yes" -%}
from {{ cookiecutter.package_name }}.platform.outbox import OutboxSettings
{% endif -%}
from {{ cookiecutter.package_name }}.platform.readiness import Readiness
{% if cookiecutter.use_postgres == "yes" -%}
from {{ cookiecutter.package_name }}.platform.redis_client import (
    RedisClient,
    RedisSettings,
)
{% endif -%}
from {{ cookiecutter.package_name }}.platform.settings import Settings

Client = TestClient[web.Request, web.Application]


def features(settings: Settings, readiness: Readiness) -> list[HttpRoutes]:
    """The service's own routes (nothing is connected: only the routes are looked at)."""
{%- if cookiecutter.use_postgres == "yes" %}
    db = PostgresPool(settings, PostgresSettings(), readiness)
    cache = RedisClient(settings, RedisSettings(), readiness)
    store = ItemStore(db, cache, OutboxSettings(), ItemsSettings())
    events = ItemEvents(cache, OutboxSettings(), readiness)
    return [
        echo_routes(EchoSettings().max_delay_ms),
        item_routes(store),
        item_event_routes(events),
    ]
{%- else %}
    return [echo_routes(EchoSettings().max_delay_ms)]
{%- endif %}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    settings, readiness = Settings(), Readiness()
    app = create_app(settings, readiness, InFlight(), features(settings, readiness))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)


async def test_every_route_is_documented(client: Client) -> None:
    document = await _document(client)
    served = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }
    served.discard(("/openapi.json", "get"))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served


async def test_the_streams_are_documented(client: Client) -> None:
    """The stream paths are part of the contract: a WebSocket upgrade (101){% if cookiecutter.use_postgres == "yes" %}, and Server-Sent
    Events (text/event-stream) resumable by `Last-Event-ID`{% endif %}."""
    paths = (await _document(client))["paths"]
    assert "101" in paths["/v1/echo/ws"]["get"]["responses"]
{%- if cookiecutter.use_postgres == "yes" %}
    events = paths["/v1/items/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert [parameter["name"] for parameter in events["parameters"]] == ["Last-Event-ID"]
{%- endif %}


async def test_the_error_schema_is_what_errors_look_like(client: Client) -> None:
    document = await _document(client)
    schema = document["components"]["schemas"]["ErrorBody"]
    rfc_9457 = {"type", "title", "status", "detail", "instance"}
    assert set(schema["properties"]) == {*rfc_9457, "errors", "error", "field"}
    for response in [
        await client.get("/v1/echo", params={"delay_ms": "-1"}),
        await client.post("/v1/echo", data=b"{}", headers={"Content-Type": "text/plain"}),
        await client.get("/nope", headers={"X-Request-ID": "r-problem"}),
    ]:
        assert response.content_type == "application/problem+json"
        body = ErrorBody.model_validate(await response.json())  # extra fields are refused
        assert body.instance == response.headers["X-Request-ID"]
    assert body.instance == "r-problem"
    bad = await client.get("/v1/echo", params={"delay_ms": "x"})
    assert (await bad.json())["errors"] == [
        {"field": "delay_ms", "detail": "must be an integer number of milliseconds"}
    ]
    echo = document["paths"]["/v1/echo"]["post"]
    assert {"400", "408", "413", "415", "503", "4XX", "5XX"} <= set(echo["responses"])
    # Probes and the document itself are never shed: no 503 for overload there.
    assert "503" not in document["paths"]["/livez"]["get"]["responses"]
