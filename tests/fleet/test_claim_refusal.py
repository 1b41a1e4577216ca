"""Agents meeting fleet nodes: refusals that depend on the fleet, through the real handshake.

Real Relay apps (in process, on loopback ports) with a RedisRegistry and a
RedisTokenStore, and the real agent connection code: no processes but Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web

from relay_client.connection import AgentConnection, open_connection
from relay_client.errors import FatalError, RelayBusyError
from relay_server.app import Relay
from relay_server.config import RelayConfig
from relay_server.fleet.registry import RedisRegistry
from relay_server.fleet.tokens import RedisTokenStore
from support.ports import LOOPBACK, free_port
from support.processes import ProcessGroup
from support.redis import RedisServer, start_redis

from .fakes import eventually


@dataclass
class InProcessNode:
    """One relay node in this process: its base URL and its fleet parts."""

    server: str
    registry: RedisRegistry
    tokens: RedisTokenStore


@pytest.fixture
async def nodes(redis_server: RedisServer, tmp_path) -> AsyncIterator[Callable[..., InProcessNode]]:
    """Factory of relay nodes sharing the test's Redis; all stopped at the end."""
    started: list[tuple[web.AppRunner, InProcessNode]] = []

    async def make(node_id: str, **options: object) -> InProcessNode:
        port = free_port()
        registry = RedisRegistry(redis_server.url, f"http://{LOOPBACK}:1", node_id=node_id, lease_ttl=2.0)
        tokens = RedisTokenStore(redis_server.url)
        assert await registry.start(wait=10) and await tokens.start(wait=10)
        config = RelayConfig(domain="localhost", host=LOOPBACK, http_port=port, data_dir=tmp_path, **options)
        runner = web.AppRunner(Relay(config, registry=registry, tokens=tokens).make_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, port).start()
        node = InProcessNode(f"http://{LOOPBACK}:{port}", registry, tokens)
        started.append((runner, node))
        return node

    yield make
    for runner, node in reversed(started):
        await runner.cleanup()
        await node.registry.stop()
        await node.tokens.stop()


async def connect(server: str, name: str, token: str | None = None) -> AgentConnection:
    return await open_connection(
        server, token=token, subdomain=name, agent_key=f"key-{name}", on_stream=lambda _s: None
    )


async def test_a_new_agent_is_refused_with_a_retryable_reason_while_redis_is_down_and_accepted_after(
    nodes, redis_server: RedisServer, processes: ProcessGroup
) -> None:
    node = await nodes("node-a", open=True)
    redis_server.kill()
    await eventually(lambda: node.registry.degraded, 15, "node degraded")

    with pytest.raises(RelayBusyError, match=r"relay refused the tunnel: the relay fleet's Redis .* is unreachable"):
        await connect(node.server, "newcomer")
    assert node.registry.lookup("newcomer") is None and len(node.registry) == 0

    start_redis(processes, redis_server.port)
    await eventually(lambda: not node.registry.degraded, 15, "node healthy again")
    conn = await connect(node.server, "newcomer")
    try:
        assert conn.welcome.name == "newcomer"
        assert node.registry.lookup("newcomer") is not None
    finally:
        conn.mux.close(reason="test over")


async def test_the_tunnels_per_token_limit_counts_the_whole_fleet(nodes) -> None:
    a = await nodes("node-a", max_tunnels_per_token=1)
    b = await nodes("node-b", max_tunnels_per_token=1)
    token, _record = a.tokens.create(label="one tunnel only")
    await eventually(lambda: b.tokens.authenticate(token), 10, "token known on node b")

    first = await connect(a.server, "first", token)
    try:
        await eventually(lambda: b.registry.lookup("first"), 10, "first tunnel seen on node b")
        with pytest.raises(FatalError, match="already has 1 tunnel"):
            await connect(b.server, "second", token)
        assert b.registry.lookup("second") is None
    finally:
        first.mux.close(reason="test over")
