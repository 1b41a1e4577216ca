"""Node-to-node forwarding: a public request on node A for a tunnel held by node B.

Both nodes run in one background event loop of this process (real listeners on
127.0.0.1); node A's registry is a fixed table that names B's internal listener
for ``stream``, node B is a plain relay holding the tunnel of a real agent
process in front of the streaming origin (another process).  Every request goes
through sockets: client -> A's public port -> B's internal port -> agent -> origin.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from relay_server.app import Relay as RelayApp
from relay_server.config import RelayConfig
from relay_server.fleet.internal import start_internal
from relay_server.fleet.proof import AUTH_HEADER, HOP_HEADER, ClusterProof
from relay_server.fleet.route import RemoteRoute
from streaming.tools import new_id, wait_for_state
from support.clients import build_request, make_client, raw_request
from support.localrelay import START_TIMEOUT, Origin, Relay, start_agent
from support.payloads import payload
from support.ports import LOOPBACK, free_port
from support.processes import ProcessGroup

STREAM_ORIGIN = Path(__file__).resolve().parents[1] / "streaming" / "stream_origin.py"

SECRET = "test-cluster-secret-0123456789"

#: Seconds any one step (a response, a websocket message) may take here.
STEP = 10.0


class StaticRoutes:
    """A registry that holds no tunnel and knows fixed remote routes (and records which it was told to forget)."""

    def __init__(self, routes: dict[str, RemoteRoute]) -> None:
        self.routes = dict(routes)
        self.forgotten: list[RemoteRoute] = []

    async def claim(self, tunnel: object) -> None:
        raise AssertionError("node A takes no agents in these tests")

    async def release(self, tunnel: object) -> None:
        return None

    def lookup(self, name: str) -> RemoteRoute | None:
        return self.routes.get(name)

    def drop_route(self, name: str, node_id: str) -> None:
        route = self.routes.get(name)
        if route is not None and route.node_id == node_id:
            self.forgotten.append(route)
            del self.routes[name]

    def __len__(self) -> int:
        return 0

    def __iter__(self):
        return iter(())


@dataclass
class Nodes:
    """Two in-process relay nodes and what the tests need to reach them."""

    a_port: int
    b_port: int
    b_internal: int
    routes: StaticRoutes
    origin: Origin
    loop: asyncio.AbstractEventLoop

    def url(self, name: str = "stream") -> str:
        """A tunnel's public URL on node A."""
        return f"http://{name}.localhost:{self.a_port}"


def _config(data_dir: Path, port: int, internal_port: int | None) -> RelayConfig:
    return RelayConfig(
        domain="localhost", host=LOOPBACK, http_port=port, data_dir=data_dir, open=True,
        cluster="redis://127.0.0.1:1/0", cluster_secret=SECRET, internal_port=internal_port,
        response_timeout=5.0,
    )


async def _serve_public(relay: RelayApp, port: int) -> web.AppRunner:
    runner = web.AppRunner(relay.make_app(), access_log=None, handler_cancellation=True, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    return runner


def _start_stream_origin(group: ProcessGroup) -> Origin:
    port = free_port()
    process = group.start(f"stream-origin:{port}", [sys.executable, str(STREAM_ORIGIN), "--port", str(port)])
    process.wait_for_line(rf"^origin listening on 127\.0\.0\.1:{port}$", timeout=START_TIMEOUT)
    return Origin(port, process)


@pytest.fixture(scope="module")
def nodes(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """Node B (holding ``stream``) and node A (routing ``stream`` to B), run on a background loop."""
    origin = _start_stream_origin(module_processes)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fleet-nodes", daemon=True)
    thread.start()
    a_port, b_port, b_internal = free_port(), free_port(), free_port()
    routes = StaticRoutes({"stream": RemoteRoute("stream", "node-b", f"http://{LOOPBACK}:{b_internal}")})
    runners: list[web.AppRunner] = []

    async def start() -> None:
        node_b = RelayApp(_config(tmp_path_factory.mktemp("node-b"), b_port, b_internal))
        runners.append(await _serve_public(node_b, b_port))
        runners.append(await start_internal(node_b))
        node_a = RelayApp(_config(tmp_path_factory.mktemp("node-a"), a_port, None), registry=routes)
        runners.append(await _serve_public(node_a, a_port))

    async def stop() -> None:
        for runner in reversed(runners):
            await runner.cleanup()

    asyncio.run_coroutine_threadsafe(start(), loop).result(STEP)
    try:
        start_agent(module_processes, Relay(b_port, Path("."), None, None, None), str(origin.port), None, "stream")
        yield Nodes(a_port, b_port, b_internal, routes, origin, loop)
    finally:
        module_processes.stop_all()  # the agent first: node B then closes no live tunnel
        asyncio.run_coroutine_threadsafe(stop(), loop).result(STEP * 2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STEP)
        loop.close()


@pytest.fixture
async def client() -> aiohttp.ClientSession:
    async with make_client() as session:
        yield session


def _headers(described: dict) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for name, value in described["headers"]:
        table.setdefault(name.lower(), []).append(value)
    return table


async def test_a_request_through_another_node_reaches_the_agent_with_the_first_nodes_forwarded_headers(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    target = "/some/path%2Fkept?q=a%20b&r=%E2%98%83"
    sent = [("X-Custom", "one"), ("X-Custom", "two"), ("X-Forwarded-For", "6.6.6.6"), (AUTH_HEADER, "v1 0 forged")]
    async with client.get(nodes.url() + target, headers=sent) as response:
        assert response.status == 200, await response.text()
        described = await response.json()
    assert described["raw_path"] == target
    headers = _headers(described)
    assert headers["x-custom"] == ["one", "two"]
    assert headers["x-forwarded-for"] == [LOOPBACK], "the first node's peer, not the caller's claim or node A's hop"
    assert headers["x-forwarded-host"] == [f"stream.localhost:{nodes.a_port}"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["host"] == [f"stream.localhost:{nodes.a_port}"]
    for node_only in (AUTH_HEADER.lower(), HOP_HEADER.lower()):
        assert node_only not in headers, f"{node_only} leaked to the local server"
    # The same request straight through node B carries the same header names, nothing more.
    async with client.get(f"http://stream.localhost:{nodes.b_port}{target}", headers=sent[:2]) as direct:
        assert direct.status == 200
        direct_names = sorted(_headers(await direct.json()))
    assert sorted(headers) == direct_names


async def test_request_and_response_bodies_stream_through_the_hop_byte_for_byte(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    body = payload(11, 6 * 1024 * 1024 + 3)

    async def pieces():
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    async with client.post(nodes.url() + "/_o/upload", data=pieces()) as response:
        assert response.status == 200, await response.text()
        info = await response.json()
    assert (info["length"], info["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert info["transfer_encoding"] == "chunked", "a chunked upload stays chunked through the hop"
    async with client.put(nodes.url() + "/_o/upload", data=body[:100_000]) as response:
        info = await response.json()
    assert (info["method"], info["length"], info["content_length"], info["transfer_encoding"]) == (
        "PUT", 100_000, "100000", None
    ), "a body with a Content-Length keeps it through the hop"
    async with client.get(nodes.url() + "/_o/download?size=30000000&seed=4") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "30000000"
        digest = hashlib.sha256()
        async for chunk in response.content.iter_any():
            digest.update(chunk)
    async with client.get(f"http://{LOOPBACK}:{nodes.origin.port}/_o/download?size=30000000&seed=4") as direct:
        expected = hashlib.sha256(await direct.read()).hexdigest()
    assert digest.hexdigest() == expected


async def test_a_streamed_response_arrives_through_the_hop_before_it_ends(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    async with client.get(nodes.url() + f"/_o/drip?id={ident}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        first = await asyncio.wait_for(response.content.readline(), STEP)
        assert first == b'{"part":"first"}\n', "the first part must arrive while the origin still holds the rest"
        async with client.get(f"http://{LOOPBACK}:{nodes.origin.port}/_o/release?id={ident}") as released:
            assert released.status == 200
        rest = await asyncio.wait_for(response.content.read(), STEP)
    assert rest == b'{"part":"second"}\n'
    async with client.get(nodes.url() + "/s/events?kind=sse&n=3&interval=0.05") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        text = (await response.read()).decode()
    assert text.count("event: tick") == 3


async def test_heads_empty_statuses_reasons_cookies_and_hop_by_hop_headers_pass_the_hop_exactly(
    nodes: Nodes,
) -> None:
    host = f"stream.localhost:{nodes.a_port}"
    head = await raw_request(nodes.a_port, build_request("HEAD", "/_o/bytes?n=1234", host), head_request=True)
    assert (head.status, head.get("Content-Length"), head.get("ETag")) == (200, "1234", '"bytes-1234"')
    for code in (204, 304):
        answer = await raw_request(nodes.a_port, build_request("GET", f"/_o/status?code={code}&reason=Fine", host))
        assert (answer.status, answer.reason, answer.body) == (code, "Fine", b"")
        assert answer.get("Content-Length") is None and answer.get("Transfer-Encoding") is None
    custom = await raw_request(nodes.a_port, build_request("GET", "/_o/status?code=299&reason=Custom%20Reason", host))
    assert (custom.status, custom.reason, custom.body) == (299, "Custom Reason", b"status 299")
    cookies = await raw_request(nodes.a_port, build_request("GET", "/_o/cookies", host))
    assert cookies.get_all("Set-Cookie") == [
        "first=1; Path=/", "second=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly", "third=3; Path=/x; SameSite=Lax"
    ]
    hop = await raw_request(nodes.a_port, build_request("GET", "/_o/hop-response", host))
    assert hop.get("X-Resp-Kept") == "kept"
    assert hop.get("X-Resp-Hop") is None and hop.get("Proxy-Authenticate") is None
    assert hop.get("Keep-Alive") is None
    gz = await raw_request(nodes.a_port, build_request("GET", "/_o/gzip", host))
    assert gz.get("Content-Encoding") == "gzip"
    assert hashlib.sha256(gz.body).hexdigest() == gz.get("X-Origin-Sha256"), "gzip bodies pass still compressed"


async def test_websockets_bridge_through_the_hop_with_subprotocol_messages_and_close_codes(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    url = nodes.url() + f"/s/ws?id={ident}"
    async with client.ws_connect(url, protocols=("chat.v3", "chat.v9")) as ws:
        assert ws.protocol == "chat.v3"
        await ws.send_str("héllo ☃")
        assert (await ws.receive(timeout=STEP)).data == "héllo ☃"
        data = payload(5, 1024 * 1024 + 7)
        await ws.send_bytes(data)
        msg = await ws.receive(timeout=STEP)
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == data
        await ws.send_str("close:4001:bye")
        msg = await ws.receive(timeout=STEP)
        assert msg.type is aiohttp.WSMsgType.CLOSE and (msg.data, msg.extra) == (4001, "bye")
    ident = new_id()
    async with client.ws_connect(nodes.url() + f"/s/ws?id={ident}") as ws:
        await ws.send_str("ping")
        assert (await ws.receive(timeout=STEP)).data == "ping"
        await asyncio.wait_for(ws.close(code=4002, message=b"client is done"), STEP)
    state = await wait_for_state(client, nodes.origin, ident, lambda s: s.get("outcome") is not None, STEP, "the close")
    assert (state["outcome"], state["close_code"], state["close_reason"]) == ("client-closed", 4002, "client is done")
    refused = await raw_request(
        nodes.a_port,
        build_request(
            "GET", "/s/ws-refuse", f"stream.localhost:{nodes.a_port}",
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")],
        ),
    )
    assert refused.status == 403, "a local server refusing the upgrade is answered with its status"


async def test_a_caller_that_goes_away_cancels_the_request_on_the_owner_node(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    reader, writer = await asyncio.open_connection(LOOPBACK, nodes.a_port)
    try:
        writer.write(build_request("GET", f"/s/hold?id={ident}&s=25&stream=1", f"stream.localhost:{nodes.a_port}"))
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"tick"), STEP)
        assert b"200 OK" in first
    finally:
        writer.transport.abort()
    state = await wait_for_state(
        client, nodes.origin, ident, lambda s: s.get("outcome") != "running", STEP, "the caller's abort"
    )
    assert state["outcome"] in ("cancelled", "disconnected:ClientConnectionResetError", "disconnected:ConnectionResetError"), state


async def test_an_unreachable_owner_node_answers_502_at_once_and_its_route_is_dropped(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    dead = RemoteRoute("gone", "node-dead", f"http://{LOOPBACK}:{free_port()}")
    nodes.routes.routes["gone"] = dead
    started = time.monotonic()
    async with client.get(nodes.url("gone") + "/x", headers={"Accept": "application/json"}) as response:
        assert response.status == 502
        assert response.headers["X-Relay-Error"] == "tunnel-node-unreachable"
        assert "cannot be reached" in (await response.json())["message"]
    assert time.monotonic() - started < STEP
    assert dead in nodes.routes.forgotten
    async with client.get(nodes.url("gone") + "/x") as response:
        assert response.headers["X-Relay-Error"] == "tunnel-offline", "once dropped, the name is simply offline"


async def _internal(nodes: Nodes, method: str, target: str, host: str, headers: list[tuple[str, str]]) -> tuple[int, dict]:
    answer = await raw_request(nodes.b_internal, build_request(method, target, host, headers))
    try:
        return answer.status, json.loads(answer.body or b"{}")
    except ValueError:
        return answer.status, {"raw": answer.body.decode("latin-1")}


async def test_the_internal_listener_refuses_everything_without_a_fresh_proof_for_that_exact_request(
    nodes: Nodes,
) -> None:
    host = f"stream.localhost:{nodes.a_port}"
    good = ClusterProof(SECRET)
    cases = {
        "no proof": [(HOP_HEADER, "1")],
        "wrong secret": [(AUTH_HEADER, ClusterProof("another-secret").sign("GET", host, "/x")), (HOP_HEADER, "1")],
        "proof of another path": [(AUTH_HEADER, good.sign("GET", host, "/y")), (HOP_HEADER, "1")],
        "proof of another method": [(AUTH_HEADER, good.sign("POST", host, "/x")), (HOP_HEADER, "1")],
        "stale proof": [(AUTH_HEADER, ClusterProof(SECRET, clock=lambda: time.time() - 600).sign("GET", host, "/x")),
                        (HOP_HEADER, "1")],
        "garbage": [(AUTH_HEADER, "v1 notanumber zz"), (HOP_HEADER, "1")],
        "proof without the hop mark": [(AUTH_HEADER, good.sign("GET", host, "/x"))],
    }
    for case, headers in cases.items():
        status, body = await _internal(nodes, "GET", "/x", host, headers)
        assert (status, body.get("error")) == (403, "forbidden"), f"{case}: {status} {body}"
    status, body = await _internal(nodes, "GET", "/_relay/health", f"localhost:{nodes.b_port}", [])
    assert status == 403, "the internal listener serves nothing but proven tunnel requests"
    # A proven request: served for the tunnel held here, 502 (never forwarded again) for any other name.
    status, body = await _internal(nodes, "GET", "/x", host, [(AUTH_HEADER, good.sign("GET", host, "/x")), (HOP_HEADER, "1"),
                                                             ("X-Forwarded-For", "203.0.113.9")])
    assert status == 200 and body["raw_path"] == "/x", body
    assert _headers(body)["x-forwarded-for"] == ["203.0.113.9"]
    other = f"elsewhere.localhost:{nodes.a_port}"
    status, body = await _internal(nodes, "GET", "/x", other, [(AUTH_HEADER, good.sign("GET", other, "/x")), (HOP_HEADER, "1")])
    assert (status, body.get("error")) == (502, "tunnel-not-on-node"), body


def test_a_proof_is_valid_only_within_its_freshness_window() -> None:
    now = [1_000_000.0]
    proof = ClusterProof(SECRET, clock=lambda: now[0], max_age=30)
    value = proof.sign("GET", "a.example.com", "/p?q=1")
    assert proof.verify(value, "GET", "A.example.com", "/p?q=1") is None, "hosts compare case-insensitively"
    now[0] += 29
    assert proof.verify(value, "GET", "a.example.com", "/p?q=1") is None
    now[0] += 2
    assert proof.verify(value, "GET", "a.example.com", "/p?q=1") == "stale cluster proof"
    assert proof.verify(value, "GET", "a.example.com", "/p?q=2") == "wrong cluster proof"
    assert proof.verify(None, "GET", "a.example.com", "/p") == "no cluster proof"
    with pytest.raises(ValueError):
        ClusterProof("")


class DroppingOwner:
    """A stand-in owner node: answers the first request on each connection, closes on the second one unanswered."""

    def __init__(self) -> None:
        self.heads: list[tuple[int, bytes]] = []  # (connection number, request line)
        self._connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        number, answered = self._connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append((number, head.split(b"\r\n", 1)[0]))
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                if answered:
                    break  # the pooled connection dies under the second request
                answered += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()


async def test_a_safe_request_meeting_a_pooled_connection_the_owner_closed_is_sent_again_on_a_fresh_one(
    nodes: Nodes, client: aiohttp.ClientSession
) -> None:
    owner = DroppingOwner()
    server = await asyncio.start_server(owner.serve, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    nodes.routes.routes["flaky"] = RemoteRoute("flaky", "node-flaky", f"http://{LOOPBACK}:{port}")
    try:
        for path in ("/first", "/second"):
            async with client.get(nodes.url("flaky") + path) as response:
                assert (response.status, await response.read()) == (200, b"ok"), path
        assert [number for number, _ in owner.heads] == [1, 1, 2], owner.heads
        assert owner.heads[-1][1] == b"GET /second HTTP/1.1"
        # Connection 2 is pooled now, with one answer behind it: the next request on it dies too.
        async with client.post(nodes.url("flaky") + "/post", data=b"body") as response:
            assert response.status == 502, "a request with a body is never sent twice"
            assert response.headers["X-Relay-Error"] == "tunnel-node-failed"
        assert [number for number, _ in owner.heads] == [1, 1, 2, 2], owner.heads
    finally:
        nodes.routes.routes.pop("flaky", None)
        server.close()
        await server.wait_closed()
