"""No internal text in answers: what the items API answers when the database fails under it.

A request whose transaction the database loses half-way (a proxy of the test's own is cut while
its INSERT waits on a lock) and requests while the database is unreachable get 503 (gRPC:
UNAVAILABLE), since a retry can succeed; a string PostgreSQL rejects (a NUL, let past the
validation that normally refuses it) gets 500 (gRPC: INTERNAL). The client gets a generic message
and its request id, never the driver's text; the log line with that request id has the detail.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
{%- if cookiecutter.use_grpc == "yes" %}
import grpc
{%- endif %}
import pytest
from aiohttp.test_utils import TestClient, TestServer
{%- if cookiecutter.use_grpc == "yes" %}
from grpc_status import rpc_status
{%- endif %}
from structlog.testing import capture_logs

from {{ cookiecutter.package_name }}.items import routes as item_routes_module
{%- if cookiecutter.use_grpc == "yes" %}
from {{ cookiecutter.package_name }}.items import rpc as item_rpc_module
{%- endif %}
from {{ cookiecutter.package_name }}.items.routes import item_routes
{%- if cookiecutter.use_grpc == "yes" %}
from {{ cookiecutter.package_name }}.items.rpc import item_service
{%- endif %}
from {{ cookiecutter.package_name }}.items.store import NewItem
from {{ cookiecutter.package_name }}.platform.errors import DEPENDENCY_FAILED
{%- if cookiecutter.use_grpc == "yes" %}
from {{ cookiecutter.package_name }}.platform.grpc_server import GrpcServer
{%- endif %}
from {{ cookiecutter.package_name }}.platform.http_server import create_app
from {{ cookiecutter.package_name }}.platform.inflight import InFlight
{%- if cookiecutter.use_grpc == "yes" %}
from {{ cookiecutter.package_name }}.v1 import items_pb2, items_pb2_grpc
{%- endif %}

from .items_support import DEFAULT_DATABASE_URL, Backend, started_backend, tcp_proxy
from .service import Service, drop_isolated, free_port, isolated_names
from .support import WITH_DETAIL, wait_until

GENERIC_500 = {
    "type": "about:blank",
    "title": "Internal Server Error",
    "status": 500,
    "detail": "internal server error",
    "error": "internal server error",
}
"""Every unexpected failure's body, but for its `instance` (the request id)."""
GENERIC_503 = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": DEPENDENCY_FAILED,
    "error": DEPENDENCY_FAILED,
}
"""A lost or unreachable dependency's body, but for its `instance`."""
DRIVER_WORDS = ("asyncpg", "postgres", "connection", "refused", "byte sequence", "UTF8", "0x00")
"""Words of the drivers' messages that no answer may carry."""


def _generic_500(request_id: str) -> dict[str, Any]:
    return {**GENERIC_500, "instance": request_id}


def _generic_503(request_id: str) -> dict[str, Any]:
    return {**GENERIC_503, "instance": request_id}


def _assert_no_driver_text(answers: list[str], details: list[str]) -> None:
    """No answer carries a logged exception's message, nor a word of the drivers' vocabulary."""
    everything = "\n".join(answers).lower()
    for word in DRIVER_WORDS:
        assert word.lower() not in everything, (word, answers)
    for detail in details:
        assert detail, "a logged exception without a message"
        assert detail.lower() not in everything, (detail, answers)


# -- The database lost mid-request, then unreachable ---------------------------------------------


async def _waiting_on_the_lock(schema: str) -> int:
    """Statements of the service waiting for the test's lock on its `items` table."""
    connection = await asyncpg.connect(DEFAULT_DATABASE_URL)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE NOT l.granted AND n.nspname = $1 AND c.relname = 'items'",
                schema,
            )
        )
    finally:
        await connection.close()


async def _http(
    session: aiohttp.ClientSession, method: str, url: str, request_id: str, body: Any = None
) -> tuple[int, str, dict[str, str]]:
    headers = {"X-Request-ID": request_id}
    async with session.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)
{%- if cookiecutter.use_grpc == "yes" %}


async def _rpc(target: str, method: str, request: Any, request_id: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = items_pb2_grpc.ItemServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await getattr(stub, method)(request, metadata=(("x-request-id", request_id),))
    return failed.value


def _check_internal(
    error: grpc.aio.AioRpcError,
    request_id: str,
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
    details: str = "internal error",
) -> str:
    """`code`, the generic `details` with the request id, no rich status, the id as the only
    trailer; returns all the client got, as text."""
    assert error.code() == code, error
    assert error.details() == f"{details} (request id {request_id})"
    assert rpc_status.from_call(error) is None  # no grpc-status-details-bin
    trailers = list(error.trailing_metadata() or ())
    assert trailers == [("x-request-id", request_id)]
    return f"{error.code()} {error.details()} {trailers} {error.debug_error_string()}"
{%- endif %}


async def test_database_lost_mid_request_then_unreachable_answers_unavailable() -> None:
    with tcp_proxy() as proxy:
        proxy.up()
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        service = Service(DRAIN_DELAY="0.2", SHUTDOWN_TIMEOUT="5", REQUEST_TIMEOUT="20")
        service.env["DATABASE_URL"] = url
        migrated = await asyncio.to_thread(
            Service(**{key: service.env[key] for key in isolated_names()}).run_command, "migrate"
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        schema = service.env["DATABASE_SCHEMA"]
        service.start()
        locker = await asyncpg.connect(
            DEFAULT_DATABASE_URL, server_settings={"search_path": schema}
        )
        try:
            await asyncio.to_thread(service.wait_ready, 30)
            # The creates reach their INSERT and wait there: the proxy is cut under them.
            lock = locker.transaction()
            await lock.start()
            await locker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            answers: list[str] = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                items = f"{service.url}/v1/items"
                create = asyncio.create_task(
                    _http(session, "POST", items, "rid-mid", {"name": "a", "quantity": 1})
                )
{%- if cookiecutter.use_grpc == "yes" %}
                new = items_pb2.CreateItemRequest(name="b", quantity=1)
                rpc_create = asyncio.create_task(
                    _rpc(service.grpc_target, "CreateItem", new, "rid-grpc-mid")
                )
                waiting = 2
{%- else %}
                waiting = 1
{%- endif %}

                async def all_waiting() -> bool:
                    return await _waiting_on_the_lock(schema) >= waiting

                await wait_until(all_waiting, "the creates waiting on the lock", 15, service)
                proxy.down()
                status, text, headers = await create
                assert (status, json.loads(text)) == (503, _generic_503("rid-mid")), text
                assert headers["X-Request-ID"] == "rid-mid"
                assert headers["Retry-After"] == "1"
                answers.append(f"{status} {headers} {text}")
                await lock.rollback()
                # Unreachable now: a new connection is refused.
                status, text, headers = await _http(session, "GET", f"{items}/1", "rid-down")
                assert (status, json.loads(text)) == (503, _generic_503("rid-down")), text
                answers.append(f"{status} {headers} {text}")
{%- if cookiecutter.use_grpc == "yes" %}
            unavailable = grpc.StatusCode.UNAVAILABLE
            mid = await rpc_create
            answers.append(_check_internal(mid, "rid-grpc-mid", unavailable, DEPENDENCY_FAILED))
            get = items_pb2.GetItemRequest(id=1)
            down = await _rpc(service.grpc_target, "GetItem", get, "rid-grpc-down")
            answers.append(_check_internal(down, "rid-grpc-down", unavailable, DEPENDENCY_FAILED))
            request_ids = ("rid-mid", "rid-down", "rid-grpc-mid", "rid-grpc-down")
{%- else %}
            request_ids = ("rid-mid", "rid-down")
{%- endif %}
            service.signal(signal.SIGTERM)
            assert await asyncio.to_thread(service.wait_exit, 20) == 0, service.output()
        finally:
            await locker.close()
            service.kill()
            drop_isolated(service.env | {"DATABASE_URL": DEFAULT_DATABASE_URL})
    # Each failure is logged as an error with its request id and the driver's detail.
    failed = {
        event["request_id"]: event
        for event in service.events()
        if event["event"] in ("http_dependency_failed", "grpc_dependency_failed")
    }
    assert set(failed) == set(request_ids), service.output()
    assert all(event["level"] == "error" for event in failed.values())
    _assert_no_driver_text(answers, [event["error"] for event in failed.values()])


# -- A string PostgreSQL rejects -----------------------------------------------------------------


def _unvalidated(data: Any) -> NewItem:
    """The item as sent, without the validation that refuses a NUL before the INSERT would."""
    return NewItem.model_construct(name=data["name"], quantity=data["quantity"])


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with started_backend(grpc_host="127.0.0.1", grpc_port=free_port()) as started:
        yield started


async def test_a_string_postgres_rejects_is_internal_without_its_text(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(item_routes_module, "parse_new_item", _unvalidated)
    answers = []
    app = create_app(backend.settings, backend.readiness, InFlight(), [item_routes(backend.store)])
    with capture_logs(processors=WITH_DETAIL) as logs:
        async with TestClient(TestServer(app)) as client:
            response = await client.post(
                "/v1/items",
                json={"name": "a\x00b", "quantity": 1},
                headers={"X-Request-ID": "rid-nul"},
            )
            text = await response.text()
        assert (response.status, json.loads(text)) == (500, _generic_500("rid-nul"))
        answers.append(f"{response.status} {dict(response.headers)} {text}")
{%- if cookiecutter.use_grpc == "yes" %}
        monkeypatch.setattr(item_rpc_module, "parse_new_item", _unvalidated)
        server = GrpcServer(
            backend.settings,
            backend.settings,
            backend.readiness,
            [item_service(backend.store, backend.settings)],
        )
        await server.start()
        try:
            new = items_pb2.CreateItemRequest(name="a\x00b", quantity=1)
            error = await _rpc(f"127.0.0.1:{server.port}", "CreateItem", new, "rid-grpc-nul")
        finally:
            await server.close()
        answers.append(_check_internal(error, "rid-grpc-nul"))
        request_ids = {"rid-nul", "rid-grpc-nul"}
{%- else %}
        request_ids = {"rid-nul"}
{%- endif %}
    unhandled = [e for e in logs if e["event"] in ("http_unhandled_error", "grpc_unhandled_error")]
    assert {entry["request_id"] for entry in unhandled} == request_ids
    for entry in unhandled:  # PostgreSQL's own words, in the log only
        assert "0x00" in entry["exception"], entry["exception"]
    _assert_no_driver_text(answers, [])
    assert (await backend.fetch("SELECT count(*) AS n FROM items"))[0]["n"] == 0
