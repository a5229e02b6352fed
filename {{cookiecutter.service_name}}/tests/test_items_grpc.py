"""The items gRPC API in-process, over the real Postgres and Redis components: CreateItem with its
event, idempotency-key metadata, status codes, the caller's deadline, health until connected."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from {{ cookiecutter.package_name }}.app import MIGRATIONS
from {{ cookiecutter.package_name }}.items.rpc import item_service
from {{ cookiecutter.package_name }}.platform.grpc_server import GrpcServer
from {{ cookiecutter.package_name }}.platform.migrations import migrate
from {{ cookiecutter.package_name }}.v1 import items_pb2, items_pb2_grpc

from .items_support import (
    DEFAULT_DATABASE_URL,
    Backend,
    connect_schema,
    isolated_env,
    isolated_settings,
    started_backend,
    tcp_proxy,
)
from .service import drop_isolated, free_port
from .support import wait_until

if TYPE_CHECKING:
    Stub = items_pb2_grpc.ItemServiceAsyncStub


@asynccontextmanager
async def serving(backend: Backend) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    services = [item_service(backend.store, backend.settings)]
    server = GrpcServer(backend.settings, backend.settings, backend.readiness, services)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, channel
    finally:
        await server.close()


def grpc_settings(**overrides: Any) -> dict[str, Any]:
    return {"grpc_host": "127.0.0.1", "grpc_port": free_port(), **overrides}


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with started_backend(**grpc_settings()) as started:
        yield started


@pytest.fixture
async def server(backend: Backend) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    async with serving(backend) as started:
        yield started


@pytest.fixture
def stub(server: tuple[GrpcServer, grpc.aio.Channel]) -> Stub:
    return items_pb2_grpc.ItemServiceStub(server[1])


def _new(name: str = "widget", quantity: int = 1) -> items_pb2.CreateItemRequest:
    return items_pb2.CreateItemRequest(name=name, quantity=quantity)


async def _count(backend: Backend, table: str) -> int:
    rows = await backend.fetch(f"SELECT count(*) AS n FROM {table}")
    return int(rows[0]["n"])


async def test_create_then_get(stub: Stub, backend: Backend) -> None:
    created = await stub.CreateItem(_new("gadget", 7), metadata=(("x-request-id", "rid-g"),))
    assert (created.name, created.quantity) == ("gadget", 7)
    assert datetime.fromisoformat(created.created_at).tzinfo is not None
    assert await stub.GetItem(items_pb2.GetItemRequest(id=created.id)) == created
    [event] = await backend.fetch(
        "SELECT event_type, payload::text AS payload, headers::text AS headers FROM outbox"
    )
    assert event["event_type"] == "item.created"
    assert f'"item_id": {created.id}' in event["payload"]
    assert "request_id" not in event["payload"]
    assert json.loads(event["headers"])["request_id"] == "rid-g"


async def test_idempotency_key_metadata_returns_the_original(stub: Stub, backend: Backend) -> None:
    key = (("idempotency-key", "g-key-1"),)
    first = await stub.CreateItem(_new("first", 1), metadata=key)
    again = await stub.CreateItem(_new("second", 2), metadata=key)
    concurrent = await asyncio.gather(
        *(stub.CreateItem(_new(f"c{i}", i), metadata=key) for i in range(8))
    )
    assert again == first
    assert all(reply == first for reply in concurrent)
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (1, 1)


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (_new(name=""), {"name"}),
        (_new(quantity=-1), {"quantity"}),
        (_new(quantity=2**40), {"quantity"}),
        (_new(name="x" * 201, quantity=-5), {"name", "quantity"}),
        (_new(name="a\x00b"), {"name"}),
    ],
)
async def test_invalid_input_is_invalid_argument_naming_fields(
    stub: Stub, backend: Backend, request_: items_pb2.CreateItemRequest, fields: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.CreateItem(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    named = (error.value.details() or "").split(":")[0]
    assert set(named.split(", ")) == fields
    status = rpc_status.from_call(error.value)
    bad_request = error_details_pb2.BadRequest()
    assert status is not None
    assert status.details[0].Unpack(bad_request)
    assert {violation.field for violation in bad_request.field_violations} == fields
    assert await _count(backend, "items") == 0


async def test_bad_idempotency_key_and_ids(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad_key:
        await stub.CreateItem(_new(), metadata=(("idempotency-key", "k" * 201),))
    assert bad_key.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad_key.value.details() or "").startswith("idempotency_key:")
    for item_id in (0, -4):
        with pytest.raises(grpc.aio.AioRpcError) as bad_id:
            await stub.GetItem(items_pb2.GetItemRequest(id=item_id))
        assert bad_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (bad_id.value.details() or "").startswith("id:")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetItem(items_pb2.GetItemRequest(id=987654))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "987654" in (missing.value.details() or "")


async def test_the_callers_deadline_bounds_the_database_work(
    stub: Stub, backend: Backend, server: tuple[GrpcServer, grpc.aio.Channel]
) -> None:
    """REQUEST_TIMEOUT is 10 s here: the call's own 0.5 s deadline must stop the insert, and
    leave neither the item nor its event behind."""
    blocker = await connect_schema(backend.settings)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.CreateItem(_new("late"), timeout=0.5)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # the handler gave up by itself, well before REQUEST_TIMEOUT
        await wait_until(lambda: not server[0].unfinished(), "handler finished", 3)
        await transaction.rollback()  # an insert still waiting would now go through
    finally:
        await blocker.close()
    await asyncio.sleep(0.5)
    assert (await _count(backend, "items"), await _count(backend, "outbox")) == (0, 0)
    assert (await stub.CreateItem(_new("after"))).name == "after"


async def test_without_a_deadline_the_request_timeout_applies() -> None:
    async with (
        started_backend(**grpc_settings(request_timeout=0.5)) as backend,
        serving(backend) as (_, channel),
    ):
        stub = items_pb2_grpc.ItemServiceStub(channel)
        blocker = await connect_schema(backend.settings)
        try:
            await blocker.execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            rid = (("x-request-id", "rid-late"),)
            for call in (
                stub.CreateItem(_new(), metadata=rid),
                stub.GetItem(items_pb2.GetItemRequest(id=5), metadata=rid),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call  # no client deadline: the code comes from the server
                assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert error.value.details() == "deadline exceeded"
                assert list(error.value.trailing_metadata() or ()) == list(rid)
            assert time.monotonic() - began < 5
        finally:
            await blocker.close()


async def test_health_not_serving_until_postgres_connects() -> None:
    with tcp_proxy() as proxy:
        url = f"postgresql://postgres:s3cret@127.0.0.1:{proxy.port}/test"
        settings = isolated_settings(**grpc_settings(database_url=url))
        await migrate(
            settings.model_copy(update={"database_url": DEFAULT_DATABASE_URL}), MIGRATIONS
        )
        backend = Backend(settings)
        try:
            async with serving(backend) as (_, channel):
                await backend.start()
                health = health_pb2_grpc.HealthStub(channel)
                stub = items_pb2_grpc.ItemServiceStub(channel)

                async def status() -> int:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                    return int(reply.status)

                await asyncio.sleep(1.0)  # several connection attempts
                assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.CreateItem(_new(), metadata=(("x-request-id", "rid-wait"),))
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE
                assert error.value.details() == "postgres is not available"
                assert list(error.value.trailing_metadata() or ()) == [("x-request-id", "rid-wait")]
                proxy.up()
                serving_now = health_pb2.HealthCheckResponse.SERVING
                await wait_until(lambda: _is(status(), serving_now), "health SERVING", 15)
                assert (await stub.CreateItem(_new("ok"))).name == "ok"
        finally:
            await backend.close()
            drop_isolated(isolated_env(settings))


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)
