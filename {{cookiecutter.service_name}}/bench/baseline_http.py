"""Baseline: the smallest aiohttp echo server, `web.run_app` with the library's defaults.

`python -m bench.baseline_http PORT`: `GET /v1/echo?msg=TEXT` answers `{"msg": TEXT}` and
`GET /readyz` answers 200, like the service, without its per-request work, settings or lifecycle.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"msg": request.query.get("msg", "")})


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def main() -> None:
    app = web.Application()
    app.router.add_get("/v1/echo", echo)
    app.router.add_get("/readyz", readyz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
