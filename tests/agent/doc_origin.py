"""An origin for the agent-feature tests: documents that name their own localhost URL.

Run as ``python doc_origin.py PORT``; prints ``origin listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys

from aiohttp import web


def make_app(port: int) -> web.Application:
    local = f"http://localhost:{port}"
    numeric = f"http://127.0.0.1:{port}"

    async def manifest(request: web.Request) -> web.Response:
        body = {
            "schema_version": "v1",
            "name_for_model": "todo",
            "api": {"type": "openapi", "url": f"{local}/specs/todo.yaml"},
            "logo_url": f"{local}/logo.png",
            "legal_info_url": f"{numeric}/legal",
            "not_this_port": f"http://localhost:{port}1/x",
        }
        return web.Response(text=json.dumps(body), content_type="text/json")

    async def named_spec(request: web.Request) -> web.StreamResponse:
        # Chunked on purpose: the rewrite must fix the framing with a Content-Length.
        response = web.StreamResponse(headers={"Content-Type": "text/yaml"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(f"openapi: 3.1.0\nservers:\n  - url: {numeric}\n".encode())
        await response.write(b"paths: {}\n")
        await response.write_eof()
        return response

    async def protected_resource(request: web.Request) -> web.Response:
        return web.json_response({"resource": f"{local}/mcp", "authorization_servers": [f"{local}/auth"]})

    async def other(request: web.Request) -> web.Response:
        return web.Response(text=f'{{"self": "{local}/other.json"}}', content_type="application/json")

    async def gzipped_spec(request: web.Request) -> web.Response:
        raw = gzip.compress(f'{{"servers": [{{"url": "{local}"}}]}}'.encode(), mtime=0)
        return web.Response(body=raw, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"{local}/next?x=1"})

    async def unauthorized(request: web.Request) -> web.Response:
        value = f'Bearer resource_metadata="{local}/.well-known/oauth-protected-resource"'
        return web.Response(status=401, headers={"WWW-Authenticate": value})

    async def host(request: web.Request) -> web.Response:
        return web.json_response({"host": request.headers.get("Host"), "auth": request.headers.get("Authorization")})

    async def strict_host(request: web.Request) -> web.Response:
        # Like MCP SDK servers and Vite: refuse Host names that are not our own.
        if request.headers.get("Host") not in (f"localhost:{port}", f"127.0.0.1:{port}"):
            return web.Response(status=421, text="Invalid Host header")
        return web.Response(text="ok")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain")

    app = web.Application()
    app.router.add_get("/.well-known/ai-plugin.json", manifest)
    app.router.add_get("/specs/todo.yaml", named_spec)
    app.router.add_get("/.well-known/oauth-protected-resource", protected_resource)
    app.router.add_get("/other.json", other)
    app.router.add_get("/openapi.json", gzipped_spec)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/unauthorized", unauthorized)
    app.router.add_get("/host", host)
    app.router.add_get("/strict", strict_host)
    app.router.add_route("*", "/plain", plain)
    return app


async def main(port: int) -> None:
    runner = web.AppRunner(make_app(port), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"origin listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
