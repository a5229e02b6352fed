"""Baseline: the smallest aiohttp echo server, `web.run_app` with the library's defaults.

`python -m bench.baseline_http PORT [asyncio|uvloop]`: `GET /v1/echo?msg=TEXT` answers
`{"msg": TEXT}` and `GET /readyz` answers 200, like the service, without its per-request work,
settings or lifecycle, on asyncio's own event loop (the default) or on uvloop. Logging is not
configured, so nothing is written (aiohttp's access logger is below the root's WARNING level).
"""

from __future__ import annotations

import asyncio
import importlib
import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"msg": request.query.get("msg", "")})


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":  # imported by name: bakes without uvloop do not have it
        loop: asyncio.AbstractEventLoop = importlib.import_module("uvloop").new_event_loop()
        return loop
    if name == "asyncio":
        return asyncio.new_event_loop()
    raise SystemExit(f"unknown event loop {name!r}")


def main() -> None:
    port, loop = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "asyncio"
    app = web.Application()
    app.router.add_get("/v1/echo", echo)
    app.router.add_get("/readyz", readyz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, loop=new_event_loop(loop))


if __name__ == "__main__":
    main()
