"""A small ChatGPT plugin to put behind the tunnel: ``python examples/plugin/server.py [PORT]``.

It serves what the plugin host fetches on registration, and one API:

- ``/.well-known/ai-plugin.json``: the manifest
- ``/openapi.yaml``: the API description
- ``/logo.png``: the logo
- ``GET /todos`` and ``POST /todos``: the API (an in-memory list)
- ``/legal``: the page ``legal_info_url`` names

The manifest and OpenAPI files name ``http://localhost:5003``, the way plugins
are written for local development; the server fills in the URL it really
serves at: ``http://localhost:PORT`` by default, or the tunnel's public URL
given with ``--public-url`` (or ``PLUGIN_PUBLIC_URL``), which is what lets
``relay-client check`` pass through the tunnel:

    python examples/plugin/server.py 5003 --public-url http://todo.localhost:8080
    relay-client http 5003 --subdomain todo
    relay-client check http://todo.localhost:8080

CORS preflights from the plugin host's origins are answered (``--cors-origin``
to change the list).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent

#: The origin the files on disk are written for; replaced by the real one when served.
TEMPLATE_ORIGIN = "http://localhost:5003"

#: Origins whose browser calls are allowed (the plugin host's).
DEFAULT_CORS_ORIGINS = ("https://chat.openai.com", "https://chatgpt.com")

#: Longest TODO accepted, in characters.
MAX_TODO_LENGTH = 500

#: Most TODOs kept.
MAX_TODOS = 1000

BASE_URL = web.AppKey("base_url", str)
FILES = web.AppKey("files", Path)
CORS_ORIGINS = web.AppKey("cors_origins", frozenset)
TODOS = web.AppKey("todos", list)


def _template(request: web.Request, name: str) -> str:
    text = (request.app[FILES] / name).read_text(encoding="utf-8")
    return text.replace(TEMPLATE_ORIGIN, request.app[BASE_URL])


async def manifest(request: web.Request) -> web.Response:
    """The plugin manifest, with the served URL filled in."""
    return web.Response(text=_template(request, ".well-known/ai-plugin.json"), content_type="application/json")


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document, with the served URL filled in."""
    return web.Response(text=_template(request, "openapi.yaml"), content_type="text/yaml")


async def logo(request: web.Request) -> web.StreamResponse:
    """The logo file."""
    path = request.app[FILES] / "logo.png"
    if not path.is_file():
        raise web.HTTPNotFound(text="no logo.png")
    return web.FileResponse(path, headers={"Content-Type": "image/png"})


async def legal(request: web.Request) -> web.Response:
    """What legal_info_url points at."""
    return web.Response(text="<h1>TODO List</h1><p>An example plugin. Your TODOs stay in memory.</p>", content_type="text/html")


async def list_todos(request: web.Request) -> web.Response:
    """``{"todos": [...]}``."""
    return web.json_response({"todos": request.app[TODOS]})


async def add_todo(request: web.Request) -> web.Response:
    """Add ``{"todo": "..."}`` to the list."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='send JSON: {"todo": "..."}') from None
    todo = body.get("todo") if isinstance(body, dict) else None
    if not isinstance(todo, str) or not todo.strip() or len(todo) > MAX_TODO_LENGTH:
        raise web.HTTPBadRequest(text=f'"todo" must be a string of 1 to {MAX_TODO_LENGTH} characters')
    todos = request.app[TODOS]
    if len(todos) >= MAX_TODOS:
        raise web.HTTPInsufficientStorage(text="the list is full")
    todos.append(todo.strip())
    return web.json_response({"todos": todos}, status=201)


@web.middleware
async def cors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Answer preflights from the allowed origins; tag their responses."""
    origin = request.headers.get("Origin", "")
    allowed = origin in request.app[CORS_ORIGINS]
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return web.Response(status=403, text="origin not allowed")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "content-type, openai-conversation-id, openai-ephemeral-user-id",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


def make_app(base_url: str, files: Path = HERE, cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS) -> web.Application:
    """The plugin app: ``base_url`` is filled into the manifest and OpenAPI document."""
    app = web.Application(middlewares=[cors])
    app[BASE_URL] = base_url.rstrip("/")
    app[FILES] = files
    app[CORS_ORIGINS] = frozenset(o.rstrip("/") for o in cors_origins)
    app[TODOS] = []
    app.router.add_get("/.well-known/ai-plugin.json", manifest)
    app.router.add_get("/openapi.yaml", openapi)
    app.router.add_get("/logo.png", logo)
    app.router.add_get("/legal", legal)
    app.router.add_get("/todos", list_todos)
    app.router.add_post("/todos", add_todo)
    return app


def main() -> None:
    """Parse the command line and serve on 127.0.0.1."""
    parser = argparse.ArgumentParser(description="Example ChatGPT plugin (a TODO list) for localrelay.")
    parser.add_argument("port", nargs="?", type=int, default=5003, help="port on 127.0.0.1 (default 5003)")
    parser.add_argument(
        "--public-url",
        default=os.environ.get("PLUGIN_PUBLIC_URL"),
        help="URL to name in the manifest and OpenAPI document (default http://localhost:PORT; env PLUGIN_PUBLIC_URL)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        help=f"origin allowed to call the API from a browser (repeatable; default {', '.join(DEFAULT_CORS_ORIGINS)})",
    )
    parser.add_argument("--files", type=Path, default=HERE, help="directory with .well-known/ai-plugin.json, openapi.yaml, logo.png")
    args = parser.parse_args()
    base_url = args.public_url or f"http://localhost:{args.port}"
    app = make_app(base_url, args.files, tuple(args.cors_origin or DEFAULT_CORS_ORIGINS))
    ready = f"plugin listening on http://localhost:{args.port} (manifest names {base_url})"
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda _: print(ready, flush=True), access_log=None)


if __name__ == "__main__":
    main()
