"""``GET /_relay/metrics`` moves as the traffic does, and only local callers or admins read it.

One relay (``--max-streams 1``, a small header limit) with one agent and
origin is shared by the module; every test reads the metrics before and
after what it does and asserts exact deltas, so the tests do not depend on
each other's traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from metrics.scrape import delta, family_names, fetch, scrape, value, wait_for_move
from support import stallproxy
from support.localrelay import (
    FORWARDING_LINE,
    START_TIMEOUT,
    Agent,
    Origin,
    Relay,
    agent_argv,
    create_token,
    get_direct,
    run_refused_agent,
    start_agent,
    start_relay,
    wait_until,
)
from support.processes import ProcessGroup

#: Seconds an agent gets to come back after its connection dropped.
RECONNECT_TIMEOUT = 30.0

#: Small enough that a few kilobytes of headers cross it (aiohttp's own cap sits above).
MAX_HEADER_BYTES = 2048

METRIC_NAMES = {
    "relay_tunnels_connected",
    "relay_streams_open",
    "relay_requests",
    "relay_request_duration_seconds",
    "relay_request_ttfb_seconds",
    "relay_bytes_in",
    "relay_bytes_out",
    "relay_agent_auth_failures",
    "relay_limit_hits",
    "relay_agent_connects",
    "relay_agent_reconnects",
    "relay_agent_disconnects",
    "relay_agent_handshakes_refused",
}


@pytest.fixture(scope="module")
def relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    """A relay with one stream per tunnel and a 2 KiB header limit."""
    return start_relay(
        module_processes,
        tmp_path_factory.mktemp("metrics-relay"),
        extra=("--max-streams", "1", "--max-header-bytes", str(MAX_HEADER_BYTES)),
    )


@pytest.fixture(scope="module")
def agent(module_processes: ProcessGroup, relay: Relay, origin: Origin) -> Agent:
    """The module's agent, forwarding to the origin."""
    return start_agent(module_processes, relay, str(origin.port), relay.token)


def read(relay: Relay):
    return lambda: scrape(relay.port)


def test_the_metrics_endpoint_answers_a_loopback_caller_in_prometheus_text_with_every_metric(relay: Relay, agent: Agent) -> None:
    status, headers, body = fetch(relay.port, "/_relay/metrics", f"localhost:{relay.port}")
    assert status == 200, body[:300]
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = family_names(body.decode())
    assert METRIC_NAMES <= families, f"missing: {sorted(METRIC_NAMES - families)}"
    samples = scrape(relay.port)
    assert value(samples, "relay_tunnels_connected") >= 1
    # No label carries a tunnel name or a path: cardinality stays bounded whatever the traffic.
    assert agent.name not in body.decode()


async def test_a_request_counts_once_with_its_status_class_method_bytes_and_timings(
    relay: Relay, agent: Agent, client: aiohttp.ClientSession
) -> None:
    before = scrape(relay.port)
    payload = b"x" * 1500
    async with client.post(f"{agent.public_url}/metered?secret=1", data=payload) as response:
        assert response.status == 200
        body = await response.read()
    after = wait_for_move(read(relay), before, "relay_requests_total", 1, status_class="2xx", method="POST")

    assert delta(before, after, "relay_requests_total", status_class="2xx", method="POST") == 1
    assert delta(before, after, "relay_bytes_in_total") == len(payload)
    assert delta(before, after, "relay_bytes_out_total") == len(body)
    assert delta(before, after, "relay_request_duration_seconds_count") == 1
    assert delta(before, after, "relay_request_ttfb_seconds_count") == 1
    assert delta(before, after, "relay_request_duration_seconds_sum") > 0
    assert delta(before, after, "relay_request_errors_total") == 0
    assert value(after, "relay_streams_open") == 0


async def test_an_offline_tunnel_counts_as_a_5xx_with_the_relay_error(relay: Relay, client: aiohttp.ClientSession) -> None:
    before = scrape(relay.port)
    async with client.delete(f"http://nobody-here.localhost:{relay.port}/x") as response:
        assert response.status == 502
    after = wait_for_move(read(relay), before, "relay_requests_total", 1, status_class="5xx", method="DELETE")
    assert delta(before, after, "relay_requests_total", status_class="5xx", method="DELETE") == 1
    assert delta(before, after, "relay_request_errors_total") == 1


async def test_headers_past_max_header_bytes_count_a_limit_hit_and_a_4xx(
    relay: Relay, agent: Agent, client: aiohttp.ClientSession
) -> None:
    before = scrape(relay.port)
    headers = {f"X-Pad-{i}": "p" * 900 for i in range(3)}
    async with client.get(f"{agent.public_url}/big-headers", headers=headers) as response:
        assert response.status == 431
    after = wait_for_move(read(relay), before, "relay_limit_hits_total", 1, limit="max_header_bytes")
    assert delta(before, after, "relay_limit_hits_total", limit="max_header_bytes") == 1
    assert delta(before, after, "relay_requests_total", status_class="4xx", method="GET") == 1


async def test_the_request_past_max_streams_counts_a_limit_hit_while_the_open_stream_shows(
    relay: Relay, agent: Agent, origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = "metrics-hold"
    holder = await client.get(f"{agent.public_url}/_o/drip?id={ident}")
    try:
        assert holder.status == 200
        assert await holder.content.readline() == b'{"part":"first"}\n'
        before = scrape(relay.port)
        assert value(before, "relay_streams_open") == 1
        async with client.get(f"{agent.public_url}/one-too-many") as refused:
            assert refused.status == 503
        after = wait_for_move(read(relay), before, "relay_limit_hits_total", 1, limit="max_streams")
        assert delta(before, after, "relay_limit_hits_total", limit="max_streams") == 1
        assert delta(before, after, "relay_requests_total", status_class="5xx", method="GET") == 1
    finally:
        status, _ = get_direct(origin.port, f"/_o/release?id={ident}")
        assert status == 200
        await holder.read()
        holder.release()
    wait_until(lambda: value(scrape(relay.port), "relay_streams_open") == 0, 20, message="the stream closed")


def test_an_agent_with_a_bad_token_counts_one_auth_failure(
    relay: Relay, origin: Origin, processes: ProcessGroup
) -> None:
    before = scrape(relay.port)
    code, line, _ = run_refused_agent(processes, relay.port, str(origin.port), "lr_not-a-real-token-at-all-0000000000")
    assert code != 0, line
    after = wait_for_move(read(relay), before, "relay_agent_auth_failures_total", 1)
    assert delta(before, after, "relay_agent_auth_failures_total") == 1
    assert delta(before, after, "relay_agent_connects_total") == 0


def test_an_agent_coming_and_going_moves_the_tunnel_gauge_and_the_connect_counters(
    relay: Relay, origin: Origin, processes: ProcessGroup
) -> None:
    before = scrape(relay.port)
    extra = start_agent(processes, relay, str(origin.port), relay.token)
    after_connect = wait_for_move(read(relay), before, "relay_agent_connects_total", 1)
    assert delta(before, after_connect, "relay_agent_connects_total") == 1
    assert delta(before, after_connect, "relay_tunnels_connected") == 1
    extra.process.stop()
    after_leave = wait_for_move(read(relay), after_connect, "relay_agent_disconnects_total", 1)
    assert delta(after_connect, after_leave, "relay_agent_disconnects_total") == 1
    assert value(after_leave, "relay_tunnels_connected") == value(before, "relay_tunnels_connected")


def test_an_agent_whose_connection_drops_and_comes_back_counts_one_reconnect(
    relay: Relay, origin: Origin, processes: ProcessGroup
) -> None:
    proxy = stallproxy.start(0, relay.port)  # the agent reaches the relay through it
    try:
        before = scrape(relay.port)
        process = processes.start("agent-via-proxy", agent_argv(proxy.port, str(origin.port), relay.token))
        process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
        forwarding = process.mark()
        first = wait_for_move(read(relay), before, "relay_agent_connects_total", 1)
        assert delta(before, first, "relay_agent_reconnects_total") == 0
        port = proxy.port
        proxy.close()  # every connection dropped at once
        proxy = stallproxy.start(port, relay.port)
        process.wait_for_line(FORWARDING_LINE, timeout=RECONNECT_TIMEOUT, after=forwarding)
        after = wait_for_move(read(relay), first, "relay_agent_reconnects_total", 1)
        after = wait_for_move(read(relay), before, "relay_agent_disconnects_total", 1)
        assert delta(before, after, "relay_agent_connects_total") == 2
        assert delta(before, after, "relay_agent_reconnects_total") == 1
        assert delta(before, after, "relay_agent_disconnects_total") == 1
        process.stop()
    finally:
        proxy.close()


def test_on_a_tunnel_hostname_the_metrics_path_belongs_to_the_tunnel(relay: Relay, agent: Agent) -> None:
    status, _, body = fetch(relay.port, "/_relay/metrics", agent.host)
    assert status == 200
    assert json.loads(body)["raw_path"] == "/_relay/metrics"  # the origin described it: no relay metrics leaked


def test_a_forwarded_for_header_from_an_untrusted_peer_changes_nothing(relay: Relay) -> None:
    # The socket is loopback and no proxy is trusted: the header is the caller's claim, ignored.
    status, _, body = fetch(relay.port, "/_relay/metrics", f"localhost:{relay.port}", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 200, body[:200]


@pytest.fixture(scope="module")
def proxied_relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> tuple[Relay, Path]:
    """A relay that trusts 127.0.0.1 as a proxy: callers are who X-Forwarded-For says."""
    data_dir = tmp_path_factory.mktemp("proxied-relay")
    relay = start_relay(module_processes, data_dir, extra=("--trusted-proxy", "127.0.0.1/32"))
    return relay, data_dir


def test_behind_a_trusted_proxy_a_remote_caller_gets_403_json(proxied_relay: tuple[Relay, Path]) -> None:
    relay, _ = proxied_relay
    status, headers, body = fetch(relay.port, "/_relay/metrics", f"localhost:{relay.port}", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 403
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "forbidden"
    assert b"relay_requests" not in body


def test_a_remote_caller_claiming_to_be_local_through_the_proxy_is_still_refused(proxied_relay: tuple[Relay, Path]) -> None:
    relay, _ = proxied_relay
    # The proxy appends the real address after whatever the caller sent.
    spoofed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}
    status, _, _ = fetch(relay.port, "/_relay/metrics", f"localhost:{relay.port}", spoofed)
    assert status == 403


def test_an_admin_token_reads_the_metrics_from_anywhere_but_an_agent_token_does_not(proxied_relay: tuple[Relay, Path]) -> None:
    relay, data_dir = proxied_relay
    remote = {"X-Forwarded-For": "203.0.113.9"}
    admin = create_token(data_dir, "--admin")
    samples = scrape(relay.port, headers={**remote, "Authorization": f"Bearer {admin}"})
    assert any(name == "relay_tunnels_connected" for name, _ in samples)
    assert relay.token is not None
    for credential in (f"Bearer {relay.token}", "Bearer lr_wrong-admin-token-000000000000", f"Basic {admin}"):
        status, _, body = fetch(relay.port, "/_relay/metrics", f"localhost:{relay.port}", {**remote, "Authorization": credential})
        assert status == 403, (credential[:12], body[:200])
