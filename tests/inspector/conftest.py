"""Fixtures for the inspector tests: a fake agent view, a local origin, a running inspector.

Unit and API tests use ``FakeHost`` (the ``InspectorHost`` protocol with plain
dataclasses) and an in-process aiohttp origin on 127.0.0.1:0; the tests that
go through a real relay live in ``test_through_relay.py`` and
``test_browser.py`` and build on ``support.localrelay``.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.localrelay import Origin, Relay, start_origin, start_relay
from support.processes import ProcessGroup

from relay_client.exchange import Exchange, Observer
from relay_client.localsession import make_local_session
from relay_client.inspector import InspectorServer, Recorder, start_inspector
from relay_client.resolver import LoopbackResolver
from relay_client.target import LocalTarget

#: A 1x1 PNG (a red pixel), for image bodies.
PNG_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


@dataclass
class FakeState:
    """``TunnelState`` as the inspector reads it."""

    public_url: str | None = "http://demo.localhost:8080"
    name: str | None = "demo"
    connected: bool = True
    reconnects: int = 0


@dataclass
class FakeConfig:
    """``AgentConfig`` as the inspector reads it."""

    target: LocalTarget
    host_header: str = "preserve"


@dataclass
class FakeHost:
    """An ``InspectorHost`` without a tunnel: state and config are plain data."""

    config: FakeConfig
    state: FakeState = field(default_factory=FakeState)
    observers: list[Observer] = field(default_factory=list)
    local_session: aiohttp.ClientSession | None = None


def finished_exchange(
    method: str = "GET",
    target: str = "/hello?x=1",
    headers: list[tuple[str, str]] | None = None,
    request_body: bytes = b"",
    status: int = 200,
    reason: str = "OK",
    response_headers: list[tuple[str, str]] | None = None,
    response_body: bytes = b"hi",
    capture_limit: int = 1024,
) -> Exchange:
    """An exchange as the forwarder leaves it after a complete request and response."""
    exchange = Exchange(
        method, target, headers or [("Host", "demo.localhost:8080")], "203.0.113.7", capture_limit=capture_limit
    )
    exchange.add_request_body(request_body)
    exchange.status, exchange.reason = status, reason
    exchange.response_headers = response_headers or [("Content-Type", "text/plain")]
    exchange.add_response_body(response_body)
    exchange.finish()
    return exchange


def record(recorder: Recorder, exchange: Exchange) -> Exchange:
    """Feed ``exchange`` to the recorder as the forwarder would (three events)."""
    recorder.request_started(exchange)
    recorder.response_started(exchange)
    recorder.finished(exchange)
    return exchange


async def _describe(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_b64": base64.b64encode(body).decode(),
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        headers={"X-Origin": "yes"},
    )


async def _pixel(request: web.Request) -> web.Response:
    return web.Response(body=PNG_PIXEL, content_type="image/png")


#: A small OpenAPI document, served as YAML.
OPENAPI_YAML = """openapi: 3.1.0
# served by the test origin
info:
  title: Todo API
  version: "1.0"
paths:
  /todos:
    get:
      operationId: listTodos
"""


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(text=OPENAPI_YAML, content_type="application/yaml")


@pytest.fixture
async def origin_url() -> AsyncIterator[str]:
    """An in-process local server on 127.0.0.1:0 that describes each request as JSON."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/pixel.png", _pixel)
    app.router.add_get("/openapi.yaml", _openapi)
    app.router.add_route("*", "/{tail:.*}", _describe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def host(origin_url: str) -> AsyncIterator[FakeHost]:
    """A fake agent whose local server is ``origin_url``, with a real local session."""
    port = int(origin_url.rsplit(":", 1)[1])
    async with make_local_session(LoopbackResolver()) as session:
        yield FakeHost(FakeConfig(LocalTarget("http", "127.0.0.1", port)), local_session=session)


@pytest.fixture
def recorder() -> Recorder:
    """A recorder with a small bound."""
    return Recorder(limit=50)


@pytest.fixture
async def inspector(recorder: Recorder, host: FakeHost) -> AsyncIterator[InspectorServer]:
    """The inspector on 127.0.0.1:0 over ``recorder`` and ``host``."""
    server = await start_inspector("127.0.0.1", 0, recorder, host)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def api(inspector: InspectorServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A client for the inspector (base URL set, bounded time)."""
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
    async with aiohttp.ClientSession(base_url=inspector.url, timeout=timeout) as session:
        yield session



@pytest.fixture(scope="module")
def open_relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    """``relay-server serve --open`` on 127.0.0.1 (no token needed)."""
    data_dir = tmp_path_factory.mktemp("inspector-relay")
    return start_relay(module_processes, data_dir, extra=("--open",), expect_paste_line=False)


@pytest.fixture(scope="module")
def origin(module_processes: ProcessGroup) -> Origin:
    """The e2e origin server (``tests/support/origin.py``) as a process."""
    return start_origin(module_processes)
