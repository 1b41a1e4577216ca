"""Fixtures for the fleet tests: a real redis-server and relay nodes as real processes on 127.0.0.1.

A fleet here is Debian's ``redis-server`` on a free loopback port plus N
``relay-server serve --cluster redis://127.0.0.1:P/0 --internal-port Q
--cluster-secret S`` processes, each with its own public port and data dir, all
sharing one token made with ``relay-server token create --cluster``.  Agents are
real ``relay-client`` processes; the origin is the streaming origin (SSE,
websockets, big bodies).  Every process is stopped by its PID.

Public requests name the tunnel in the Host header, ``NAME.localhost:PORT``, and
go to 127.0.0.1:PORT of whichever node the test picks: the node holding the
agent answers directly, the others must forward over their internal listener.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.clients import make_client  # noqa: E402
from support.localrelay import (  # noqa: E402
    FORWARDING_LINE,
    START_TIMEOUT,
    Agent,
    Origin,
    Relay,
    agent_argv,
    get_direct,
    relay_cli,
    wait_until,
)
from support.ports import LOOPBACK, free_port  # noqa: E402
from support.processes import ProcessExited, ProcessGroup, child_env, python_module  # noqa: E402
from support.redis import RedisServer, redis_binary, start_redis  # noqa: E402

STREAM_ORIGIN = Path(__file__).resolve().parents[1] / "streaming" / "stream_origin.py"

#: Lease TTL the test nodes run with (seconds): short, so failover tests take seconds, not tens of them.
#: Set through the fleet's hidden test knob; production uses the default (about 10 s).
TEST_LEASE_TTL = 3.0

#: Environment variable the fleet reads the lease TTL from (hidden, for tests only).
LEASE_TTL_ENV = "RELAY_FLEET_LEASE_TTL"

#: X-Relay-Error code of the page a node answers when the tunnel's owner node cannot be reached.
NODE_UNREACHABLE = "tunnel-node-unreachable"

#: X-Relay-Error code when the owner node broke off the hop.
NODE_FAILED = "tunnel-node-failed"

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fleet test needs Debian's redis-server: skip them all, with the reason, when it is missing."""
    if redis_binary() is None:
        skip = pytest.mark.skip(reason="redis-server not installed (apt-get install redis-server)")
        for item in items:
            if "/fleet/" in str(item.fspath):
                item.add_marker(skip)


@dataclass
class Node:
    """One fleet node: a relay-server process with a public port and an internal (node-to-node) port."""

    relay: Relay
    internal_port: int
    index: int
    #: Started with --proxy-protocol: a direct request must open with a PROXY header.
    proxied: bool = False

    @property
    def port(self) -> int:
        """Public HTTP port."""
        return self.relay.port

    @property
    def server_url(self) -> str:
        """What agents are given as --server."""
        return self.relay.server_url

    @property
    def process(self):
        return self.relay.process

    def url(self, name: str) -> str:
        """Public URL of tunnel ``name`` through this node."""
        return f"http://{name}.localhost:{self.port}"

    def host(self, name: str) -> str:
        """The Host header of a public request for ``name`` on this node."""
        return f"{name}.localhost:{self.port}"

    def health(self) -> dict:
        """``GET /_relay/health`` as JSON."""
        if not self.proxied:
            return self.relay.health()
        status, body = get_direct(self.port, "/_relay/health", host=f"localhost:{self.port}", proxied_for=LOOPBACK)
        assert status == 200, f"health answered {status}: {body[:300]!r}"
        return json.loads(body)

    def get(self, name: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """A plain GET for tunnel ``name`` on this node (sync, for polling)."""
        return get_direct(self.port, path, host=self.host(name), timeout=timeout)


@dataclass
class Fleet:
    """Redis, the nodes, the shared secret, and how to start more of them."""

    redis: RedisServer
    secret: str
    nodes: list[Node]
    data_root: Path
    group: ProcessGroup
    node_extra: tuple[str, ...] = ()
    _started: int = field(default=0)

    @property
    def cluster(self) -> str:
        """The ``--cluster`` URL."""
        return self.redis.url

    def create_token(self, *options: str) -> str:
        """``relay-server token create --cluster URL OPTIONS``: the printed token."""
        return create_cluster_token(self.cluster, *options)

    def start_node(self, *extra: str) -> Node:
        """Start one more node of this fleet."""
        self._started += 1
        node = start_node(
            self.group, self.cluster, self.secret, self.data_root / f"node{self._started}",
            index=self._started, extra=self.node_extra + tuple(extra),
        )
        return node


def node_env() -> dict[str, str]:
    """Child environment of a node: the short test lease TTL."""
    return child_env({LEASE_TTL_ENV: str(TEST_LEASE_TTL)})


def node_argv_extra(cluster: str, secret: str, internal_port: int, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The fleet options of one node (``start_relay`` adds host, port and data dir)."""
    return (
        "--domain", "localhost",
        "--cluster", cluster,
        "--internal-port", str(internal_port),
        "--cluster-secret", secret,
        *extra,
    )


def start_node(
    group: ProcessGroup, cluster: str, secret: str, data_dir: Path, *, index: int, extra: Sequence[str] = ()
) -> Node:
    """``relay-server serve --cluster ...`` on free ports; wait until healthy."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port, internal = free_port(), free_port()
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(port), "--data-dir", str(data_dir),
        *node_argv_extra(cluster, secret, internal, extra),
    )
    process = group.start(f"node{index}:{port}", argv, node_env())
    proxied = "--proxy-protocol" in extra

    def healthy() -> bool:
        if process.returncode is not None:
            raise ProcessExited(f"node {index} exited before it was healthy\n{process.output()}")
        status, _ = get_direct(
            port, "/_relay/health", host=f"localhost:{port}", timeout=1.0, proxied_for=LOOPBACK if proxied else None
        )
        return status == 200

    wait_until(healthy, START_TIMEOUT, message=f"node {index} on port {port} healthy")
    return Node(Relay(port, data_dir, process, None, None), internal, index, proxied)


def create_cluster_token(cluster: str, *options: str) -> str:
    """``relay-server token create --cluster URL``: the token printed on stdout."""
    result = relay_cli("token", "create", "--cluster", cluster, *options)
    assert result.returncode == 0, f"token create --cluster failed ({result.returncode}): {result.stderr}"
    token = result.stdout.strip()
    assert "\n" not in token and token.startswith("lr_"), f"token create printed {result.stdout!r}"
    return token


def start_fleet(
    group: ProcessGroup, data_root: Path, count: int, *, redis: RedisServer | None = None, extra: Sequence[str] = ()
) -> Fleet:
    """Redis (unless given) and ``count`` nodes, started side by side."""
    redis = redis or start_redis(group)
    fleet = Fleet(redis, secrets.token_hex(16), [], data_root, group, tuple(extra))
    with ThreadPoolExecutor(max_workers=count) as pool:
        fleet.nodes = list(pool.map(lambda _: fleet.start_node(), range(count)))
    fleet.nodes.sort(key=lambda n: n.index)
    return fleet


def start_stream_origin(group: ProcessGroup) -> Origin:
    """The streaming origin (``tests/streaming/stream_origin.py``): SSE, websockets, big bodies."""
    port = free_port()
    process = group.start(f"stream-origin:{port}", [sys.executable, str(STREAM_ORIGIN), "--port", str(port)])
    process.wait_for_line(rf"^origin listening on 127\.0\.0\.1:{port}$", timeout=START_TIMEOUT)
    return Origin(port, process)


def fleet_agent_argv(
    servers: Sequence[Node], target: str, token: str | None, subdomain: str | None, extra: Sequence[str] = ()
) -> list[str]:
    """``relay-client http TARGET --server N1 [--server N2 ...]``: tried in order, the next on failure."""
    more: list[str] = []
    for node in servers[1:]:
        more += ["--server", node.server_url]
    return agent_argv(servers[0].port, target, token, subdomain, tuple(more) + tuple(extra))


def start_fleet_agent(
    group: ProcessGroup, servers: Sequence[Node], target: str, token: str | None, subdomain: str | None,
    extra: Sequence[str] = (),
) -> Agent:
    """Start an agent on ``servers[0]`` (the others as fallbacks) and wait for its Forwarding line."""
    process = group.start(f"agent:{subdomain}", fleet_agent_argv(servers, target, token, subdomain, extra))
    match = process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
    assert int(match.group(3)) == servers[0].port, match.group(0)
    return Agent(process, match.group(1), match.group(2), match.group(4))


def error_code(status: int, body: bytes) -> str | None:
    """The ``error`` of a relay-made JSON error body, if it is one."""
    if status < 400:
        return None
    try:
        return json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None


def relay_error(node: Node, name: str, path: str = "/", timeout: float = 5.0) -> tuple[int, str | None, bytes]:
    """A GET with ``Accept: application/json``: (status, X-Relay-Error or None, body)."""
    import http.client

    conn = http.client.HTTPConnection(LOOPBACK, node.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": node.host(name), "Accept": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("X-Relay-Error"), response.read()
    finally:
        conn.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that resolves *.localhost to 127.0.0.1 and never decompresses."""
    async with make_client(timeout=120.0) as session:
        yield session


@pytest.fixture(scope="module")
def fleet_processes() -> Iterator[ProcessGroup]:
    """Processes shared by one fleet test module; stopped by PID at its end."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def redis_server(processes: ProcessGroup) -> RedisServer:
    """A fresh redis-server on a free loopback port for one test (stopped by PID)."""
    return start_redis(processes)
