"""A fleet of three nodes and one Redis: a tunnel held on node 1 answers through nodes 2 and 3 exactly as on node 1.

Bodies (100 MB downloads compared by hash, uploads), SSE arriving unbuffered,
websockets (text, binary, close codes) cross the node-to-node hop; the
X-Forwarded-* headers are those of the node the client reached; a name held on
node 1 is refused to another token on node 3; a token revoked from the CLI
disconnects its agent wherever it is.  Then, each with its own processes:
``--workers 2`` serving one tunnel from both workers on one port, and
``deploy/haproxy.cfg`` (the compose file's balancer) in front of two nodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import http.client
import shutil
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from fleet.conftest import (
    Fleet,
    Node,
    create_cluster_token,
    fleet_agent_argv,
    node_argv_extra,
    node_env,
    relay_error,
    start_fleet,
    start_fleet_agent,
    start_stream_origin,
)
from streaming.tools import new_id, read_events, wait_for_state
from support.localrelay import (
    FORWARDING_LINE,
    REFUSAL_TIMEOUT,
    START_TIMEOUT,
    Agent,
    Origin,
    Relay,
    agent_argv,
    get_direct,
    relay_cli,
    wait_until,
)
from support.payloads import payload, sha256_hex
from support.ports import LOOPBACK, free_port, free_port_pair
from support.processes import REPO_ROOT, ProcessExited, ProcessGroup, python_module
from support.redis import start_redis

#: The tunnel name the agent holds on node 1.
NAME = "fleetapp"

#: The big download: 100 MB, streamed, compared by hash.
BIG = 100 * 1000 * 1000

#: Events of the SSE run and the gap the origin leaves between them (100-200 ms).
EVENTS = 12
INTERVAL = 0.15

#: Seconds one websocket message may take to come back.
ECHO_TIMEOUT = 10.0


@dataclass
class Stack:
    """Redis, three nodes, the origin, and the agent holding NAME on node 1."""

    fleet: Fleet
    origin: Origin
    token: str
    agent: Agent

    @property
    def nodes(self) -> list[Node]:
        return self.fleet.nodes


@pytest.fixture(scope="module")
def stack(fleet_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """Start Redis and three nodes, make one token fleet-wide, put an agent for NAME on node 1."""
    origin = start_stream_origin(fleet_processes)
    fleet = start_fleet(fleet_processes, tmp_path_factory.mktemp("fleet-e2e"), 3)
    token = fleet.create_token("--label", "e2e")
    agent = start_fleet_agent(fleet_processes, fleet.nodes[:1], str(origin.port), token, NAME)
    assert agent.name == NAME
    return Stack(fleet, origin, token, agent)


@pytest.fixture
def live(stack: Stack) -> Stack:
    """The shared stack, checked to be alive (a crash is reported where it happened)."""
    for process in [stack.fleet.redis.process, stack.origin.process, stack.agent.process] + [n.process for n in stack.nodes]:
        assert process.returncode is None, f"a shared process died\n{process.output()}"
    return stack


def _header(headers: list[list[str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


@pytest.mark.parametrize("via", [1, 2, 3])
async def test_a_request_through_any_node_reaches_the_agent_on_node_1_with_that_nodes_forwarded_headers(
    via: int, live: Stack, client: aiohttp.ClientSession
) -> None:
    node = live.nodes[via - 1]
    async with client.get(f"{node.url(NAME)}/some/path?q=1&via={via}", headers={"X-Test": "fleet"}) as response:
        assert response.status == 200, await response.text()
        info = await response.json()
    assert info["method"] == "GET"
    assert info["raw_path"] == f"/some/path?q=1&via={via}"
    headers = info["headers"]
    assert _header(headers, "X-Test") == ["fleet"]
    assert _header(headers, "Host") == [node.host(NAME)]
    # The node the client reached sets X-Forwarded-*; the hop passes them on unchanged, adds none of its own.
    assert _header(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert _header(headers, "X-Forwarded-Proto") == ["http"]
    assert _header(headers, "X-Forwarded-Host") == [node.host(NAME)]
    # Nothing of the cluster's own plumbing reaches the local server.
    names = {k.lower() for k, _ in headers}
    assert not {n for n in names if n.startswith("x-relay")}, names


@pytest.mark.parametrize("via", [2, 3])
async def test_a_100_mb_download_through_another_node_arrives_whole_and_streamed(
    via: int, live: Stack, client: aiohttp.ClientSession
) -> None:
    digest = hashlib.sha256()
    received = 0
    async with client.get(f"{live.nodes[via - 1].url(NAME)}/_o/download?size={BIG}&seed=11") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(BIG)
        async for chunk in response.content.iter_chunked(1 << 20):
            digest.update(chunk)
            received += len(chunk)
    assert received == BIG
    assert digest.hexdigest() == sha256_hex(11, BIG)


async def test_a_chunked_download_through_another_node_keeps_its_bytes_and_framing(
    live: Stack, client: aiohttp.ClientSession
) -> None:
    size = 5_000_000
    async with client.get(f"{live.nodes[2].url(NAME)}/_o/chunked?size={size}&seed=4") as response:
        assert response.status == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.headers
        body = await response.read()
    assert hashlib.sha256(body).hexdigest() == sha256_hex(4, size)


async def test_an_upload_through_another_node_reaches_the_local_server_whole(
    live: Stack, client: aiohttp.ClientSession
) -> None:
    size = 20_000_000

    async def body():
        sent = 0
        while sent < size:
            piece = payload(sent // 1_000_000, min(1_000_000, size - sent))
            sent += len(piece)
            yield piece

    expected = hashlib.sha256(b"".join([payload(i, 1_000_000) for i in range(size // 1_000_000)])).hexdigest()
    async with client.post(f"{live.nodes[1].url(NAME)}/_o/upload", data=body()) as response:
        assert response.status == 200, await response.text()
        info = await response.json()
    assert info["length"] == size
    assert info["sha256"] == expected


async def test_sse_through_another_node_arrives_event_by_event_unbuffered(
    live: Stack, client: aiohttp.ClientSession
) -> None:
    started = time.time()
    url = f"{live.nodes[1].url(NAME)}/s/events?kind=sse&n={EVENTS}&interval={INTERVAL}"
    async with client.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        arrivals = await read_events(response, "sse")
    finished = time.time()

    assert [a.data["i"] for a in arrivals] == list(range(EVENTS))
    first, last = arrivals[0], arrivals[-1]
    assert finished - started >= (EVENTS - 1) * INTERVAL, "the stream ended sooner than the origin wrote it"
    # Unbuffered: the first event arrived long before the origin even wrote the last one.
    assert first.arrived < last.data["t"] - 1.0, "the first event arrived only once the last was written: buffered"
    gaps = [b.arrived - a.arrived for a, b in zip(arrivals, arrivals[1:])]
    assert 0.5 * INTERVAL < statistics.median(gaps) < 2 * INTERVAL, f"arrival gaps {[round(g, 3) for g in gaps]}"
    assert max(a.delay for a in arrivals) < 0.5, [round(a.delay, 3) for a in arrivals]


async def _echo(ws: aiohttp.ClientWebSocketResponse, message: str | bytes) -> aiohttp.WSMessage:
    if isinstance(message, str):
        await ws.send_str(message)
    else:
        await ws.send_bytes(message)
    return await ws.receive(timeout=ECHO_TIMEOUT)


@pytest.mark.parametrize("via", [2, 3])
async def test_a_websocket_through_another_node_echoes_text_and_binary_and_passes_the_origins_close_code(
    via: int, live: Stack, client: aiohttp.ClientSession
) -> None:
    url = f"{live.nodes[via - 1].url(NAME)}/s/ws?id={new_id()}"
    async with client.ws_connect(url, protocols=("chat.v3",)) as ws:
        assert ws.protocol == "chat.v3"
        for text in ["hello", "héllo ☃ \U0001f600", "x" * 100_000, ""]:
            msg = await _echo(ws, text)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            assert msg.data == text
        for data in [bytes(range(256)) * 16, payload(3, 2 * 1024 * 1024 + 5), b""]:
            msg = await _echo(ws, data)
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            assert msg.data == data
        await ws.send_str("close:4002:bye from the origin")
        msg = await ws.receive(timeout=ECHO_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        assert msg.data == 4002
        assert msg.extra == "bye from the origin"


async def test_a_close_code_from_the_public_client_reaches_the_local_server_through_another_node(
    live: Stack, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    async with client.ws_connect(f"{live.nodes[2].url(NAME)}/s/ws?id={ident}") as ws:
        assert (await _echo(ws, "before close")).data == "before close"
        await ws.close(code=4321, message=b"client done")
    state = await wait_for_state(
        client, live.origin, ident, lambda s: s.get("outcome") is not None, 10.0, "the client's close"
    )
    assert state["outcome"] == "client-closed", state
    assert state["close_code"] == 4321
    assert state["close_reason"] == "client done"


async def test_many_requests_at_once_through_two_nodes_all_get_their_own_answer(
    live: Stack, client: aiohttp.ClientSession
) -> None:
    async def one(i: int) -> None:
        node = live.nodes[1 + i % 2]
        async with client.post(f"{node.url(NAME)}/_o/mirror", data=f"request {i}".encode()) as response:
            assert response.status == 200
            assert await response.read() == f"request {i}".encode()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(60))), 60)


def test_another_token_claiming_the_same_name_on_node_3_is_refused(live: Stack, processes: ProcessGroup) -> None:
    other = create_cluster_token(live.fleet.cluster, "--label", "intruder")
    argv = fleet_agent_argv(live.nodes[2:], str(live.origin.port), other, NAME)
    process = processes.start("intruder", argv)
    code = process.wait_exit(REFUSAL_TIMEOUT + 10)
    output = process.output()
    errors = [line for line in process.lines["stderr"] if line.startswith("relay-client: error:")]

    assert code != 0, output
    assert process.count(r"^Forwarding ") == 0, output
    assert len(errors) == 1, output
    assert NAME in errors[0] and ("taken" in errors[0] or "in use" in errors[0]), errors[0]
    assert "Traceback" not in output, output
    # The holder on node 1 is untouched and still answers everywhere.
    for node in live.nodes:
        status, body = node.get(NAME, "/still-mine")
        assert status == 200, body[:300]
        assert json.loads(body)["raw_path"] == "/still-mine"


def test_a_token_revoked_from_any_machine_disconnects_its_agent_on_whichever_node_it_is(
    live: Stack, processes: ProcessGroup
) -> None:
    token = create_cluster_token(live.fleet.cluster, "--label", "revoke-me")
    process = processes.start("doomed", fleet_agent_argv(live.nodes[1:2], str(live.origin.port), token, "doomed"))
    process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
    for node in live.nodes:
        wait_until(lambda: node.get("doomed", "/x")[0] == 200, 10, message=f"doomed on node {node.index}")
    listing = relay_cli("token", "list", "--cluster", live.fleet.cluster)
    assert listing.returncode == 0, listing.stderr
    token_id = next(line.split()[0] for line in listing.stdout.splitlines() if line.rstrip().endswith("revoke-me"))

    revoked = relay_cli("token", "revoke", token_id, "--cluster", live.fleet.cluster)

    assert revoked.returncode == 0, revoked.stderr
    code = process.wait_exit(20)
    assert code != 0, process.output()
    assert any(line.startswith("relay-client: error:") for line in process.lines["stderr"]), process.output()
    for node in live.nodes:
        wait_until(lambda: relay_error(node, "doomed")[1] == "tunnel-offline", 10, message=f"doomed gone on node {node.index}")
    status, body = live.nodes[0].get(NAME, "/others-unaffected")
    assert status == 200, body[:300]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _health_on_fresh_connection(port: int) -> dict:
    status, body = get_direct(port, "/_relay/health", host=f"localhost:{port}", timeout=5.0)
    assert status == 200, body[:300]
    return json.loads(body)


async def test_workers_2_carry_websockets_and_bodies_for_one_tunnel_whichever_worker_a_connection_lands_on(
    processes: ProcessGroup, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    # (tests/fleet/test_workers.py covers the supervisor: ports, signals, a dying worker.)
    redis = start_redis(processes)
    origin = start_stream_origin(processes)
    port, internal = free_port(), free_port_pair()  # the workers' internal ports are P and P + 1
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(port), "--data-dir", str(tmp_path),
        *node_argv_extra(redis.url, "w" * 32, internal, ("--workers", "2")),
    )
    supervisor = processes.start("workers", argv, node_env())

    def workers_up() -> bool:
        if supervisor.returncode is not None:
            raise ProcessExited(f"the supervisor exited with {supervisor.returncode}: {supervisor.output()[-600:]}")
        return len(_children(supervisor.pid)) == 2 and _health_on_fresh_connection(port)["status"] == "ok"

    wait_until(workers_up, 2 * START_TIMEOUT, message="two workers up and healthy")
    token = create_cluster_token(redis.url, "--label", "workers")
    start_fleet_agent(processes, [Node(Relay(port, tmp_path, supervisor, None, None), internal, 1)],
                      str(origin.port), token, "shared")

    nodes: set[str] = set()
    for i in range(12):  # a fresh connection each (force_close): SO_REUSEPORT picks a worker per connection
        nodes.add(_health_on_fresh_connection(port)["cluster"]["node"])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            body = payload(i, 300_000 + i)
            async with fresh.post(f"http://127.0.0.1:{port}/_o/mirror", data=body,
                                  headers={"Host": f"shared.localhost:{port}"}) as response:
                assert response.status == 200, await response.text()
                assert await response.read() == body
        async with client.ws_connect(f"http://shared.localhost:{port}/s/ws?id={new_id()}") as ws:
            assert (await _echo(ws, f"text {i}")).data == f"text {i}"
            assert (await _echo(ws, bytes([i]) * 70_000)).data == bytes([i]) * 70_000
            await ws.close()
    assert len(nodes) == 2, f"only one worker answered on port {port}: {nodes}"
    assert len(_children(supervisor.pid)) == 2, "a worker died under the requests"


def _local_haproxy_config(lb_port: int, nodes: list[Node]) -> str:
    """deploy/haproxy.cfg with its listeners and servers moved to loopback ports (the rest as deployed)."""
    config = (REPO_ROOT / "deploy" / "haproxy.cfg").read_text()
    config = config.replace("bind :8080", f"bind {LOOPBACK}:{lb_port}").replace("bind :8443", f"bind {LOOPBACK}:{free_port()}")
    config = config.replace(" check port 8080", " check")  # each test node has its own port
    config = config.replace("maxconn 100000", "maxconn 1000")
    for node, name in zip(nodes, ("relay1", "relay2")):
        for port in (8080, 8443):
            config = config.replace(f"server {name} {name}:{port}", f"server {name} {LOOPBACK}:{node.port}")
    return config


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (apt-get install haproxy)")
def test_the_deploy_haproxy_config_spreads_agents_and_requests_over_two_nodes(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    lb_port = free_port()
    origin = start_stream_origin(processes)
    # As compose-fleet.yml runs them: PROXY headers expected, from the balancer (and the nodes' own checks) only.
    fleet = start_fleet(
        processes, tmp_path / "fleet", 2,
        extra=("--public-port", str(lb_port), "--proxy-protocol", "--trusted-proxy", f"{LOOPBACK}/32"),
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(_local_haproxy_config(lb_port, fleet.nodes))
    processes.start("haproxy", ["haproxy", "-db", "-f", str(config)])
    wait_until(lambda: get_direct(lb_port, "/_relay/health", host="localhost")[0] == 200, START_TIMEOUT,
               message="haproxy in front of the nodes")
    token = fleet.create_token("--label", "lb")

    agents = []
    for name in ("lb-one", "lb-two", "lb-three"):
        process = processes.start(f"agent:{name}", agent_argv(lb_port, str(origin.port), token, name))
        match = process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
        assert match.group(1) == f"http://{name}.localhost:{lb_port}", match.group(0)
        agents.append(name)
    held = [n.health()["tunnels"] for n in fleet.nodes]
    assert sum(held) == 3 and min(held) >= 1, f"tunnels per node behind the balancer: {held}"

    # Every request through the balancer, on a fresh connection each (round robin over both nodes), is answered.
    for i in range(30):
        name = agents[i % 3]
        status, body = get_direct(lb_port, f"/lb/{i}", host=f"{name}.localhost:{lb_port}", timeout=10.0)
        assert status == 200, f"{name} request {i}: {status} {body[:300]!r}"
        assert json.loads(body)["raw_path"] == f"/lb/{i}"

    # A client the balancer sees at 127.0.0.2: the PROXY header carries its address to whichever node, and on.
    for i in range(4):
        echo = json.loads(_get_from("127.0.0.2", lb_port, f"/from/{i}", f"{agents[i % 3]}.localhost:{lb_port}"))
        assert [v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"] == ["127.0.0.2"], echo["headers"]
    # Straight to a node, bypassing the balancer, without a header: closed unanswered.
    with socket.create_connection((LOOPBACK, fleet.nodes[0].port), timeout=5) as bypass:
        bypass.sendall(b"GET /_relay/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert bypass.recv(100) == b""


def _get_from(source: str, port: int, path: str, host: str) -> bytes:
    """GET on a fresh connection from loopback address ``source``: the body of a 200."""
    with socket.create_connection((LOOPBACK, port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200, response.status
        return response.read()
