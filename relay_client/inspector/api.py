"""ngrok's local agent API (same paths, fields and status codes), plus a live feed.

``GET /api/tunnels``, ``GET /api/tunnels/{name}``, ``GET /api/status``,
``GET|POST|DELETE /api/requests/http``, ``GET /api/requests/http/{id}`` as
ngrok serves them; ``GET /api/requests/http/stream`` is ours: server-sent
events (``request``, ``update``, ``clear``, ``resync``) that keep the page live;
``GET /metrics`` is the agent's Prometheus metrics (``agent_metrics``).
The inspector is local only: it answers only to loopback Host names (which
defeats DNS rebinding) and refuses state-changing requests from other origins
(which defeats cross-site request forgery from a page the developer visits).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from yarl import URL

from relay_client import __version__
from relay_client.inspector.errors import api_error
from relay_client.inspector.guard import local_only
from relay_client.inspector.host import InspectorHost
from relay_client.inspector.page import PAGE_HTML
from relay_client.inspector.recorder import Recorder
from relay_client.inspector.replay import Replayer, ReplayError, parse_overrides
from relay_client.inspector.serialize import COMMAND_LINE, exchange_json, tunnel_name

HOST_KEY = web.AppKey("host", InspectorHost)
RECORDER_KEY = web.AppKey("recorder", Recorder)
REPLAYER_KEY = web.AppKey("replayer", Replayer)

#: Seconds between keep-alive comments on the live feed.
STREAM_HEARTBEAT = 15.0

#: Largest API request body (an edited replay body arrives base64-encoded in JSON).
MAX_API_BODY = 24 * 1024 * 1024

def _tunnel(app: web.Application) -> dict[str, Any] | None:
    host = app[HOST_KEY]
    public_url = host.state.public_url
    if public_url is None:
        return None
    name = tunnel_name(host.state.name)
    target = host.config.target
    return {
        "name": name,
        "uri": f"/api/tunnels/{name}",
        "public_url": public_url,
        "proto": URL(public_url).scheme,
        "config": {"addr": target.origin, "inspect": True},
        "metrics": app[RECORDER_KEY].metrics.as_ngrok(),
    }


def _is_our_tunnel(app: web.Application, name: str) -> bool:
    return name in (tunnel_name(app[HOST_KEY].state.name), COMMAND_LINE)


async def api_root(request: web.Request) -> web.Response:
    """``GET /api``: where the resources are."""
    links = {"tunnels": "/api/tunnels", "requests": "/api/requests/http", "status": "/api/status"}
    return web.json_response({"uri": "/api", **links})


async def list_tunnels(request: web.Request) -> web.Response:
    """``GET /api/tunnels``: the tunnel once it is up (an empty list before)."""
    tunnel = _tunnel(request.app)
    return web.json_response({"tunnels": [tunnel] if tunnel else [], "uri": "/api/tunnels"})


async def get_tunnel(request: web.Request) -> web.Response:
    """``GET /api/tunnels/{name}`` (``command_line`` works too, as with ngrok)."""
    tunnel = _tunnel(request.app)
    if tunnel is None or not _is_our_tunnel(request.app, request.match_info["name"]):
        return api_error(404, f"tunnel {request.match_info['name']!r} not found")
    return web.json_response(tunnel)


async def status(request: web.Request) -> web.Response:
    """``GET /api/status``: agent status, ngrok's fields plus our session details."""
    state = request.app[HOST_KEY].state
    session = {
        "legs": [],
        "connected": state.connected,
        "public_url": state.public_url,
        "reconnects": state.reconnects,
    }
    body = {
        "status": "online" if state.connected else "reconnecting",
        "agent_version": __version__,
        "session": session,
        "uri": "/api/status",
        "localrelay": {"history": len(request.app[RECORDER_KEY]), "history_limit": request.app[RECORDER_KEY].limit},
    }
    return web.json_response(body)


def _status_matches(code: int | None, wanted: str) -> bool:
    for item in wanted.lower().split(","):
        item = item.strip()
        if item == "pending" and code is None:
            return True
        if code is None or not item:
            continue
        if len(item) == 3 and item.endswith("xx") and item[0].isdigit() and code // 100 == int(item[0]):
            return True
        if item.isdigit() and code == int(item):
            return True
    return False


async def list_requests(request: web.Request) -> web.Response:
    """``GET /api/requests/http?limit=N&tunnel_name=T``, newest first; also ``path``, ``method``, ``status``."""
    query = request.query
    limit: int | None = None
    if query.get("limit"):
        try:
            limit = int(query["limit"])
        except ValueError:
            return api_error(400, f"limit: {query['limit']!r} is not a number")
        if limit < 0:
            return api_error(400, "limit: must not be negative")
    name = request.app[HOST_KEY].state.name
    out: list[dict[str, Any]] = []
    if query.get("tunnel_name") and not _is_our_tunnel(request.app, query["tunnel_name"]):
        return web.json_response({"uri": "/api/requests/http", "requests": out})
    path, method, wanted = query.get("path", ""), query.get("method", "").upper(), query.get("status", "")
    for exchange in request.app[RECORDER_KEY].newest_first():
        if limit is not None and len(out) >= limit:
            break
        if path and path not in exchange.target:
            continue
        if method and exchange.method.upper() != method:
            continue
        if wanted and not _status_matches(exchange.status, wanted):
            continue
        out.append(exchange_json(exchange, name))
    return web.json_response({"uri": "/api/requests/http", "requests": out})


async def get_request(request: web.Request) -> web.Response:
    """``GET /api/requests/http/{id}``; 404 if unknown (or evicted)."""
    exchange = request.app[RECORDER_KEY].get(request.match_info["id"])
    if exchange is None:
        return api_error(404, f"request {request.match_info['id']!r} not found", id=request.match_info["id"])
    return web.json_response(exchange_json(exchange, request.app[HOST_KEY].state.name))


async def _json_payload(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/x-www-form-urlencoded":  # older ngrok clients
        return dict(await request.post())  # type: ignore[arg-type]
    try:
        payload = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ReplayError(400, "the body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ReplayError(400, "the body must be a JSON object")
    return payload


async def replay_request(request: web.Request) -> web.Response:
    """``POST /api/requests/http`` with ``{"id": ...}`` (and optional edits): replay, 204."""
    try:
        payload = await _json_payload(request)
        ident = payload.get("id")
        if not isinstance(ident, str) or not ident:
            raise ReplayError(400, "id: the id of a captured request is required")
        name = payload.get("tunnel_name")
        if name and not _is_our_tunnel(request.app, str(name)):
            raise ReplayError(404, f"tunnel {name!r} not found")
        original = request.app[RECORDER_KEY].get(ident)
        if original is None:
            raise ReplayError(404, f"request {ident!r} not found")
        exchange = await request.app[REPLAYER_KEY].replay(original, parse_overrides(payload))
    except ReplayError as exc:
        return api_error(exc.status, str(exc))
    if exchange.error:
        failed = api_error(502, f"the replay failed: {exchange.error}", replay_id=exchange.id)
        failed.headers["X-Replay-Id"] = exchange.id
        return failed
    return web.Response(status=204, headers={"X-Replay-Id": exchange.id})


async def clear_requests(request: web.Request) -> web.Response:
    """``DELETE /api/requests/http``: forget every captured request, 204."""
    request.app[RECORDER_KEY].clear()
    return web.Response(status=204)


async def stream_requests(request: web.Request) -> web.StreamResponse:
    """``GET /api/requests/http/stream``: server-sent events for the page."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    name = request.app[HOST_KEY].state.name
    with request.app[RECORDER_KEY].subscribe() as feed:
        try:
            await response.write(b"retry: 1000\nevent: hello\ndata: {}\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(feed.get(), STREAM_HEARTBEAT)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event.kind == "close":
                    break
                data = exchange_json(event.exchange, name) if event.exchange is not None else {}
                await response.write(f"event: {event.kind}\ndata: {json.dumps(data)}\n\n".encode())
        except (ConnectionError, RuntimeError):  # the browser went away
            pass
    return response


async def page(request: web.Request) -> web.Response:
    """``GET /``: the inspector page (built on the API above)."""
    return web.Response(
        text=PAGE_HTML,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"},
    )


#: The page loads nothing from elsewhere; images are data: URLs built from captured bodies.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'"


async def prometheus_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the agent's metrics in Prometheus text format (local only, like the rest)."""
    prometheus = request.app[RECORDER_KEY].prometheus
    prometheus.watch(request.app[HOST_KEY].state)
    body, content_type = prometheus.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def _on_shutdown(app: web.Application) -> None:
    app[RECORDER_KEY].close_subscribers()


async def _on_cleanup(app: web.Application) -> None:
    await app[REPLAYER_KEY].close()


def make_app(recorder: Recorder, host: InspectorHost, extra_hosts: tuple[str, ...] = ()) -> web.Application:
    """The inspector's web application: page, ngrok-compatible API, live feed."""
    app = web.Application(middlewares=[local_only(extra_hosts)], client_max_size=MAX_API_BODY)
    app[HOST_KEY] = host
    app[RECORDER_KEY] = recorder
    app[REPLAYER_KEY] = Replayer(host, recorder)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    router = app.router
    router.add_get("/", page)
    router.add_get("/api", api_root)
    router.add_get("/metrics", prometheus_metrics)
    router.add_get("/api/", api_root)
    router.add_get("/api/tunnels", list_tunnels)
    router.add_get("/api/tunnels/{name}", get_tunnel)
    router.add_get("/api/status", status)
    router.add_get("/api/requests/http", list_requests)
    router.add_post("/api/requests/http", replay_request)
    router.add_delete("/api/requests/http", clear_requests)
    router.add_get("/api/requests/http/stream", stream_requests)
    router.add_get("/api/requests/http/{id}", get_request)
    return app
