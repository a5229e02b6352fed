"""gRPC service of the items example: `CreateItem`, `GetItem` (see proto/.../items.proto)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from typing_extensions import override

from ..platform.assembly import Assembly, Feature
from ..platform.grpc_server import GrpcService, GrpcServices
from ..platform.settings import Settings
from ..v1 import items_pb2, items_pb2_grpc
from .store import Item, ItemStore, parse_idempotency_key, parse_item_id, parse_new_item

Context = grpc.aio.ServicerContext[Any, Any]


def _message(item: Item) -> items_pb2.Item:
    return items_pb2.Item(
        id=item.id, name=item.name, quantity=item.quantity, created_at=item.created_at.isoformat()
    )


class ItemService(items_pb2_grpc.ItemServiceServicer):
    def __init__(self, store: ItemStore, settings: Settings) -> None:
        self._store = store
        self._default_timeout = settings.request_timeout

    def _budget(self, context: Context) -> float:
        """The caller's deadline when it sent one, else the configured request budget."""
        remaining = context.time_remaining()
        return self._default_timeout if remaining is None else max(0.0, remaining)

    @override
    async def CreateItem(
        self, request: items_pb2.CreateItemRequest, context: Context
    ) -> items_pb2.Item:
        new = parse_new_item({"name": request.name, "quantity": request.quantity})
        metadata = dict(context.invocation_metadata() or ())
        key = parse_idempotency_key(_text(metadata.get("idempotency-key")))
        async with asyncio.timeout(self._budget(context)):
            item, _ = await self._store.create(new, key)
        return _message(item)

    @override
    async def GetItem(self, request: items_pb2.GetItemRequest, context: Context) -> items_pb2.Item:
        item_id = parse_item_id(request.id)
        async with asyncio.timeout(self._budget(context)):
            return _message(await self._store.get(item_id))


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def item_service(store: ItemStore, settings: Settings) -> GrpcService:
    def register(server: grpc.aio.Server) -> str:
        items_pb2_grpc.add_ItemServiceServicer_to_server(ItemService(store, settings), server)
        return str(items_pb2.DESCRIPTOR.services_by_name["ItemService"].full_name)

    return register


def _wire(assembly: Assembly) -> None:
    assembly[GrpcServices].append(item_service(assembly[ItemStore], assembly.settings))


ITEMS_RPC = Feature("items_rpc", wire=_wire)
"""The items feature's RPCs: list it after the items and the gRPC server."""
