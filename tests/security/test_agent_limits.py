"""The agent endpoint's abuse limits: failed logins per source address, tunnels per token.

The limiter itself is driven with a fake clock; the relay's behaviour with real
processes: a scanner's address gets 429 (with Retry-After) before its token is
looked at, other addresses and successes are unaffected, and a token cannot
hold more tunnels than ``--max-tunnels-per-token`` (its own agent reconnecting
does not count twice).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time

import aiohttp
import pytest
from aiohttp import web

from relay_client.connection import AgentConnection, open_connection
from relay_client.errors import FatalError, NameError_
from relay_server.app import Relay as RelayApp
from relay_server.config import RelayConfig
from relay_server.observer import RelayObserver
from relay_server.ratelimit import FailureLimiter, address_key, retry_after_header
from relay_server.tokens import TokenStore
from support.clients import make_client
from support.localrelay import (
    Origin,
    Relay,
    create_token,
    run_refused_agent,
    start_agent,
    start_origin,
    start_relay,
)
from support.ports import LOOPBACK, free_port
from support.processes import ProcessGroup

AUTH_FAILURES = 3
MAX_TUNNELS = 2

#: Seconds an evicted or refused connection gets to finish.
SETTLE = 15.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ the limiter


def test_an_address_is_blocked_after_the_limit_until_its_oldest_failure_ages_out() -> None:
    clock = _Clock()
    limiter = FailureLimiter(3, window=60.0, clock=clock)
    for _ in range(2):
        limiter.failure("198.51.100.7")
        clock.now += 10
    assert limiter.retry_after("198.51.100.7") is None
    limiter.failure("198.51.100.7")  # third failure at t=20
    assert limiter.retry_after("198.51.100.7") == pytest.approx(40.0)  # first failure (t=0) leaves at t=60
    clock.now += 39
    assert limiter.retry_after("198.51.100.7") == pytest.approx(1.0)
    clock.now += 1
    assert limiter.retry_after("198.51.100.7") is None
    assert retry_after_header(0.2) == "1" and retry_after_header(40.0) == "40" and retry_after_header(39.1) == "40"


def test_one_address_failing_does_not_block_another() -> None:
    limiter = FailureLimiter(2, clock=_Clock())
    for _ in range(5):
        limiter.failure("198.51.100.7")
    assert limiter.retry_after("198.51.100.7") is not None
    assert limiter.retry_after("198.51.100.8") is None
    assert limiter.retry_after("2001:db8::1") is None


def test_ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("not an address") == "not an address"
    limiter = FailureLimiter(2, clock=_Clock())
    limiter.failure("2001:db8:1:2::1")
    limiter.failure("2001:db8:1:2::2")  # another address of the same subscriber
    assert limiter.retry_after("2001:db8:1:2::3") is not None


def test_memory_is_bounded_in_addresses_and_in_failures_per_address() -> None:
    clock = _Clock()
    limiter = FailureLimiter(3, max_addresses=100, clock=clock)
    for i in range(1000):
        limiter.failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    for _ in range(1000):
        limiter.failure("10.9.9.9")
    assert len(limiter._failures[address_key("10.9.9.9")]) == 3
    clock.now += 61  # old entries are forgotten when looked at
    assert limiter.retry_after("10.9.9.9") is None
    assert address_key("10.9.9.9") not in limiter._failures


def test_a_limit_of_zero_turns_throttling_off() -> None:
    limiter = FailureLimiter(0, clock=_Clock())
    for _ in range(100):
        limiter.failure("198.51.100.7")
    assert limiter.retry_after("198.51.100.7") is None
    assert len(limiter) == 0


# ------------------------------------------------------------------ failed logins, end to end


@pytest.fixture(scope="module")
def origin(module_processes: ProcessGroup) -> Origin:
    return start_origin(module_processes)


@pytest.fixture
async def client() -> aiohttp.ClientSession:
    async with make_client(timeout=30.0) as session:
        yield session


async def _connect(
    client: aiohttp.ClientSession, relay: Relay, token: str | None, forwarded_for: str | None = None
) -> tuple[int, dict, dict]:
    """A plain GET of /_relay/connect (no upgrade): status, JSON body, headers."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    async with client.get(f"http://localhost:{relay.port}/_relay/connect", headers=headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_failed_logins_from_one_address_get_429_with_retry_after_before_the_token_is_checked(
    processes: ProcessGroup, tmp_path, origin: Origin, client: aiohttp.ClientSession
) -> None:
    relay = start_relay(
        processes, tmp_path, extra=("--auth-failures-per-minute", str(AUTH_FAILURES), "--trusted-proxy", "127.0.0.1/32")
    )
    scanner, neighbour = "203.0.113.7", "203.0.113.8"
    for _ in range(AUTH_FAILURES - 1):
        assert (await _connect(client, relay, "lr_guess", scanner))[0] == 401
    for _ in range(5):  # successes do not count as failures (400: the token was fine, no upgrade asked)
        assert (await _connect(client, relay, relay.token, scanner))[0] == 400
    assert (await _connect(client, relay, None, scanner))[0] == 401  # the last allowed failure: no token at all

    status, body, headers = await _connect(client, relay, "lr_guess", scanner)
    assert status == 429
    assert body["error"] == "too-many-auth-failures"
    assert scanner in body["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Blocked means blocked: even the right token is not looked at from that address now.
    assert (await _connect(client, relay, relay.token, scanner))[0] == 429

    # Another address (behind the same trusted proxy), and the proxy itself, are unaffected.
    assert (await _connect(client, relay, "lr_guess", neighbour))[0] == 401
    assert (await _connect(client, relay, relay.token, neighbour))[0] == 400
    agent = start_agent(processes, relay, str(origin.port), relay.token)  # connects from 127.0.0.1 itself
    assert agent.process.returncode is None


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit(
    processes: ProcessGroup, tmp_path, origin: Origin, client: aiohttp.ClientSession
) -> None:
    relay = start_relay(processes, tmp_path, extra=("--auth-failures-per-minute", str(AUTH_FAILURES)))
    for i in range(AUTH_FAILURES):
        assert (await _connect(client, relay, "lr_guess", f"198.51.100.{i}"))[0] == 401
    status, body, _ = await _connect(client, relay, "lr_guess", "198.51.100.200")
    assert status == 429
    assert "127.0.0.1" in body["message"]  # counted against the socket peer, not the header

    code, error, elapsed = run_refused_agent(processes, relay.port, str(origin.port), relay.token)
    assert code != 0
    assert "429" in error and "too many failed logins" in error
    assert elapsed < 10.0


# ------------------------------------------------------------------ tunnels per token


@pytest.fixture(scope="module")
def limited_relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    return start_relay(
        module_processes, tmp_path_factory.mktemp("tunnel-limit"), extra=("--max-tunnels-per-token", str(MAX_TUNNELS))
    )


async def test_a_token_cannot_hold_more_tunnels_than_the_limit(
    processes: ProcessGroup, limited_relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    token = create_token(limited_relay.data_dir, "--label", "busy")
    agents = [start_agent(processes, limited_relay, str(origin.port), token) for _ in range(MAX_TUNNELS)]

    code, error, elapsed = run_refused_agent(processes, limited_relay.port, str(origin.port), token)
    assert code == 1
    assert f"max_tunnels_per_token = {MAX_TUNNELS}" in error
    assert elapsed < 10.0
    for agent in agents:
        assert agent.process.returncode is None

    # Another token is not affected by this one's count.
    other = start_agent(processes, limited_relay, str(origin.port), create_token(limited_relay.data_dir))
    async with client.get(other.public_url + "/other") as response:
        assert response.status == 200

    # A slot freed is a slot usable again.
    agents[0].process.stop()
    async with client.get(agents[0].public_url + "/gone") as response:
        assert response.status == 502
    assert start_agent(processes, limited_relay, str(origin.port), token).process.returncode is None


async def test_the_same_agent_replacing_its_own_connection_does_not_count_twice(
    limited_relay: Relay, client: aiohttp.ClientSession
) -> None:
    token = create_token(limited_relay.data_dir, "--label", "reconnecting")
    name = f"replaced-{secrets.token_hex(3)}"
    running: list[tuple[AgentConnection, asyncio.Task]] = []

    async def connect(agent_key: str, subdomain: str | None) -> AgentConnection:
        conn = await open_connection(
            limited_relay.server_url, token=token, subdomain=subdomain, agent_key=agent_key, on_stream=lambda s: None
        )
        running.append((conn, asyncio.create_task(conn.run())))
        return conn

    try:
        await connect("agent-a", name)
        await connect("agent-b", None)  # the token's second tunnel: at the limit now
        # agent-a comes back (its old socket not yet noticed dead): it replaces itself.
        replacement = await connect("agent-a", name)
        assert replacement.welcome.name == name
        old, old_task = running[0]
        await asyncio.wait_for(old_task, SETTLE)
        assert "replaced" in old.mux.close_reason

        with pytest.raises(FatalError, match="max_tunnels_per_token"):
            await connect("agent-c", None)
    finally:
        for conn, task in running:
            conn.mux.close(reason="test done")
        await asyncio.wait_for(asyncio.gather(*(t for _, t in running), return_exceptions=True), SETTLE)


# ------------------------------------------------------------------ what the observer is told


class _Recorder(RelayObserver):
    """Keeps every agent-side hook call as (hook, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def agent_connected(self, *args, **kwargs) -> None:
        self.calls.append(("agent_connected", args, kwargs))

    def agent_disconnected(self, *args, **kwargs) -> None:
        self.calls.append(("agent_disconnected", args, kwargs))

    def agent_refused(self, *args, **kwargs) -> None:
        self.calls.append(("agent_refused", args, kwargs))

    def auth_failed(self, *args, **kwargs) -> None:
        self.calls.append(("auth_failed", args, kwargs))

    def limit_hit(self, *args, **kwargs) -> None:
        self.calls.append(("limit_hit", args, kwargs))

    def of(self, hook: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == hook]


async def _wait_for(predicate, message: str) -> None:
    deadline = asyncio.get_running_loop().time() + SETTLE
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"{message} not seen within {SETTLE:g}s"
        await asyncio.sleep(0.05)


async def test_the_observer_hears_every_login_refusal_limit_and_session_but_never_a_token(
    tmp_path, client: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = RelayConfig(
        domain="localhost", host=LOOPBACK, http_port=port, data_dir=tmp_path,
        max_tunnels_per_token=1, auth_failures_per_minute=2, trusted_proxies=[ipaddress.ip_network("127.0.0.1/32")],
    )
    recorder = _Recorder()
    relay = RelayApp(config, observer=recorder)
    store = TokenStore(tmp_path)
    token, record = store.create(label="watched")
    expired, expired_record = store.create(expires=time.time() - 1)
    admin, admin_record = store.create(admin=True)
    runner = web.AppRunner(relay.make_app(), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    server = f"http://localhost:{port}"
    running: list[tuple[AgentConnection, asyncio.Task]] = []

    async def connect(agent_key: str, subdomain: str | None = None) -> AgentConnection:
        conn = await open_connection(server, token=token, subdomain=subdomain, agent_key=agent_key, on_stream=lambda s: None)
        running.append((conn, asyncio.create_task(conn.run())))
        return conn

    try:
        target = Relay(port, tmp_path, None, None, None)  # what _connect needs: the port
        assert (await _connect(client, target, "lr_guess", "203.0.113.1"))[0] == 401
        assert (await _connect(client, target, expired, "203.0.113.2"))[0] == 401
        assert (await _connect(client, target, admin, "203.0.113.3"))[0] == 401
        assert (await _connect(client, target, None, "203.0.113.1"))[0] == 401
        assert (await _connect(client, target, "lr_guess", "203.0.113.1"))[0] == 429
        assert [(a, k) for a, k in recorder.of("auth_failed")] == [
            (("203.0.113.1", "unknown"), {"token_id": None}),
            (("203.0.113.2", "expired"), {"token_id": expired_record.id}),
            (("203.0.113.3", "admin_token"), {"token_id": admin_record.id}),
            (("203.0.113.1", "missing"), {"token_id": None}),
        ]
        assert recorder.of("limit_hit") == [(("auth_failures_per_minute", None, "203.0.113.1"), {})]

        await connect("agent-a", "watched-app")
        await connect("agent-a", "watched-app")  # the same agent again: a reconnect
        with pytest.raises(FatalError):
            await connect("agent-b", "other-app")  # over the limit of one tunnel
        with pytest.raises(NameError_):
            await connect("agent-c", "www")
        await asyncio.wait_for(running[0][1], SETTLE)  # the replaced connection ends
        connected = recorder.of("agent_connected")
        assert [args for args, _ in connected] == [
            ("watched-app", LOOPBACK, connected[0][0][2], False),
            ("watched-app", LOOPBACK, connected[1][0][2], True),
        ]
        assert connected[0][0][2].startswith("localrelay-agent/")
        assert all(kwargs == {"token_id": record.id} for _, kwargs in connected)
        assert (("max_tunnels_per_token", "other-app", LOOPBACK), {}) in recorder.of("limit_hit")
        refused = [(args[0], args[1]) for args, _ in recorder.of("agent_refused")]
        assert refused == [(LOOPBACK, "TOO_MANY_TUNNELS"), (LOOPBACK, "NAME_INVALID")]
        await _wait_for(lambda: len(recorder.of("agent_disconnected")) == 1, "the replaced tunnel's disconnect")
        assert "replaced" in recorder.of("agent_disconnected")[0][0][2]

        store.revoke(record.id)
        await asyncio.wait_for(running[1][1], SETTLE)
        await _wait_for(lambda: len(recorder.of("agent_disconnected")) == 2, "the revoked tunnel's disconnect")
        args, kwargs = recorder.of("agent_disconnected")[1]
        assert args == ("watched-app", LOOPBACK, f"token {record.id} was revoked")
        assert kwargs == {"token_id": record.id}
        assert running[1][0].fatal_close() is not None

        for secret in (token, expired, admin):
            assert secret not in repr(recorder.calls)
    finally:
        for conn, _ in running:
            conn.mux.close(reason="test done")
        await asyncio.wait_for(asyncio.gather(*(t for _, t in running), return_exceptions=True), SETTLE)
        await runner.cleanup()
