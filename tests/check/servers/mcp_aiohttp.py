"""A sample MCP server (Streamable HTTP, handshake era, SSE answers) written with aiohttp, run as its own process.

``python mcp_aiohttp.py --port P [--buffered] [--answer-version V] [--auth PUBLIC_URL] [--resource URL]``

- ``initialize`` answers with the client's version when known (else the
  newest; ``--answer-version`` forces one), issues an ``Mcp-Session-Id`` and
  answers as SSE.
- ``tools/list`` answers as SSE: two ``notifications/progress`` events, then
  the result, ``PACE`` seconds apart. With ``--buffered`` the same events are
  produced at the same pace but written all at once at the end, as a server
  (or proxy) that buffers its event stream does.
- ``ping`` answers as JSON; notifications get 202; GET opens the session's
  event stream (comments only); DELETE ends the session.
- ``--auth PUBLIC_URL``: every MCP request without ``Authorization: Bearer
  good`` gets 401 with ``WWW-Authenticate: Bearer resource_metadata=...``,
  and RFC 9728 metadata is served at ``/.well-known/oauth-protected-resource``
  (and ``.../mcp``) naming ``--resource`` (default ``PUBLIC_URL/mcp``).

Prints ``mcp listening on 127.0.0.1:P`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from aiohttp import web

#: Seconds between the events of a ``tools/list`` answer.
PACE = 0.3

#: Longest the GET stream stays open.
GET_STREAM_LIMIT = 30.0

VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
TOOLS = [
    {"name": "add", "description": "Add two numbers.", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}},
    {"name": "echo", "description": "Echo a text.", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
]

SESSIONS: set[str] = set()
OPTIONS = web.AppKey("options", argparse.Namespace)


def _rpc_error(request_id: object, code: int, message: str, status: int) -> web.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return web.json_response(body, status=status)


def _event(message: dict) -> bytes:
    return f"event: message\ndata: {json.dumps(message)}\n\n".encode()


async def _sse(request: web.Request, events: list[bytes], pace: float, buffered: bool, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers})
    await response.prepare(request)
    if buffered:
        await asyncio.sleep(pace * (len(events) - 1))
        await response.write(b"".join(events))
    else:
        for index, event in enumerate(events):
            if index:
                await asyncio.sleep(pace)
            await response.write(event)
    await response.write_eof()
    return response


def _unauthorized(request: web.Request) -> web.Response | None:
    options = request.app[OPTIONS]
    if not options.auth or request.headers.get("Authorization") == "Bearer good":
        return None
    metadata = f"{options.auth}/.well-known/oauth-protected-resource/mcp"
    return web.json_response(
        {"error": "invalid_token"},
        status=401,
        headers={"WWW-Authenticate": f'Bearer resource_metadata="{metadata}", scope="tools"'},
    )


async def post(request: web.Request) -> web.StreamResponse:
    """One JSON-RPC message."""
    if (denied := _unauthorized(request)) is not None:
        return denied
    options = request.app[OPTIONS]
    accept = request.headers.get("Accept", "")
    if "application/json" not in accept or "text/event-stream" not in accept:
        return _rpc_error(None, -32600, "Not Acceptable: accept application/json and text/event-stream", 406)
    try:
        message = await request.json()
    except ValueError:
        return _rpc_error(None, -32700, "Parse error", 400)
    method, request_id = message.get("method"), message.get("id")
    if method == "initialize":
        asked = (message.get("params") or {}).get("protocolVersion")
        version = options.answer_version or (asked if asked in VERSIONS else VERSIONS[-1])
        session = uuid.uuid4().hex
        SESSIONS.add(session)
        result = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "aiohttp-sample", "version": "1.0"}}
        event = _event({"jsonrpc": "2.0", "id": request_id, "result": result})
        return await _sse(request, [event], 0, False, {"Mcp-Session-Id": session})
    session = request.headers.get("Mcp-Session-Id")
    if not session:
        return _rpc_error(request_id, -32600, "Bad Request: Missing session ID", 400)
    if session not in SESSIONS:
        return _rpc_error(request_id, -32600, "Session not found", 404)
    version = request.headers.get("MCP-Protocol-Version")
    if version is not None and version not in VERSIONS and version != options.answer_version:
        return _rpc_error(request_id, -32600, f"Unsupported protocol version {version}", 400)
    if request_id is None:  # a notification
        return web.Response(status=202)
    if method == "ping":
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": {}})
    if method == "tools/list":
        token = ((message.get("params") or {}).get("_meta") or {}).get("progressToken", "list")
        events = [
            _event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": step, "total": 2}})
            for step in (1, 2)
        ]
        events.append(_event({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}}))
        return await _sse(request, events, PACE, options.buffered, {})
    return _rpc_error(request_id, -32601, "Method not found", 200)


async def get_stream(request: web.Request) -> web.StreamResponse:
    """The session's server-to-client stream: comments until the client leaves."""
    if (denied := _unauthorized(request)) is not None:
        return denied
    if request.headers.get("Mcp-Session-Id") not in SESSIONS:
        return _rpc_error(None, -32600, "Bad Request: Missing session ID", 400)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GET_STREAM_LIMIT
    while loop.time() < deadline:
        await response.write(b": keep-alive\n\n")
        await asyncio.sleep(1.0)
    return response


async def delete(request: web.Request) -> web.Response:
    """End a session."""
    SESSIONS.discard(request.headers.get("Mcp-Session-Id", ""))
    return web.Response(status=200)


async def metadata(request: web.Request) -> web.Response:
    """RFC 9728 protected-resource metadata."""
    options = request.app[OPTIONS]
    if not options.auth:
        raise web.HTTPNotFound()
    resource = options.resource or f"{options.auth}/mcp"
    return web.json_response({"resource": resource, "authorization_servers": [options.auth], "scopes_supported": ["tools"]})


def main() -> None:
    """Serve on 127.0.0.1:PORT."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--buffered", action="store_true")
    parser.add_argument("--answer-version", help="the protocolVersion initialize always answers with")
    parser.add_argument("--auth", help="public base URL; require a bearer token and serve OAuth metadata")
    parser.add_argument("--resource", help="the resource the metadata names (default: AUTH/mcp)")
    options = parser.parse_args()
    app = web.Application()
    app[OPTIONS] = options
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", get_stream)
    app.router.add_delete("/mcp", delete)
    app.router.add_get("/.well-known/oauth-protected-resource", metadata)
    app.router.add_get("/.well-known/oauth-protected-resource/mcp", metadata)
    ready = f"mcp listening on 127.0.0.1:{options.port}"
    web.run_app(app, host="127.0.0.1", port=options.port, print=lambda _: print(ready, flush=True), access_log=None)


if __name__ == "__main__":
    main()
