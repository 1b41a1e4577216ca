"""A tiny local server to put behind the tunnel: ``python examples/hello_server.py [PORT]``."""

from __future__ import annotations

import sys
import time

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "hello": "from your laptop",
            "path": request.path_qs,
            "host": request.host,
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "time": time.time(),
        }
    )


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    app = web.Application()
    app.router.add_get("/{tail:.*}", index)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
