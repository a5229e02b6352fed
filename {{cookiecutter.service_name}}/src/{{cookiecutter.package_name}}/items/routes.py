"""HTTP routes of the items example: `POST /v1/items`, `GET /v1/items/{id}`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..platform.http_server import SETTINGS, HttpRoutes, Routes, read_json_object
from ..platform.openapi import Doc, parameter
from .store import Item, ItemStore, NewItem, parse_idempotency_key, parse_item_id, parse_new_item

ITEMS = web.AppKey("items", ItemStore)

CREATE = Doc(
    "Create an item and its `item.created` event, atomically.",
    {
        201: ("Created.", Item),
        200: ("The item first created with this `Idempotency-Key`.", Item),
        400: ("A bad field or header, named.", None),
        504: ("REQUEST_TIMEOUT spent on the database.", None),
    },
    body=NewItem,
    parameters=(
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 200},
            "description": "A repeated key answers the original item (200), creating nothing.",
        },
    ),
)
GET = Doc(
    "One item, through the Redis cache.",
    {
        200: ("The item.", Item),
        400: ("Not a positive integer id.", None),
        404: ("No such item.", None),
    },
    parameters=(parameter("item_id", "path", {"type": "integer", "minimum": 1}, "The item's id."),),
)


def _json(item: Item, status: int) -> web.Response:
    return web.json_response(item.model_dump(mode="json"), status=status)


async def create_item(request: web.Request) -> web.Response:
    """201 with the new item; 200 with the original one for a repeated `Idempotency-Key`."""
    new = parse_new_item(await read_json_object(request))
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    async with asyncio.timeout(request.app[SETTINGS].request_timeout):
        item, created = await request.app[ITEMS].create(new, key)
    return _json(item, 201 if created else 200)


async def get_item(request: web.Request) -> web.Response:
    item_id = parse_item_id(request.match_info["item_id"])
    async with asyncio.timeout(request.app[SETTINGS].request_timeout):
        return _json(await request.app[ITEMS].get(item_id), 200)


def item_routes(store: ItemStore) -> HttpRoutes:
    def add_routes(routes: Routes) -> None:
        routes.app[ITEMS] = store
        routes.post("/v1/items", create_item, doc=CREATE)
        routes.get("/v1/items/{item_id}", get_item, doc=GET)

    return add_routes
