"""The agent's own Prometheus metrics on the inspector port (``GET /metrics``) move with its traffic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from metrics.scrape import delta, family_names, fetch, scrape, value, wait_for_move
from support.localrelay import FORWARDING_LINE, START_TIMEOUT, Origin, Relay, start_relay, wait_until
from support.ports import free_port
from support.processes import ManagedProcess, ProcessGroup, python_module

AGENT_METRICS = {
    "relay_client_requests",
    "relay_client_request_duration_seconds",
    "relay_client_bytes_in",
    "relay_client_bytes_out",
    "relay_client_request_errors",
    "relay_client_reconnects",
    "relay_client_connected",
}

#: Seconds the agent gets to come back after its relay restarts (its backoff is capped well below).
RECONNECT_TIMEOUT = 30.0


@dataclass
class InspectedAgent:
    """An agent with its inspector on a known loopback port."""

    process: ManagedProcess
    public_url: str
    inspect_port: int

    def metrics(self):
        """The agent's samples right now."""
        return scrape(self.inspect_port, "/metrics", host=f"127.0.0.1:{self.inspect_port}")


def start_inspected_agent(processes: ProcessGroup, relay: Relay, origin: Origin) -> InspectedAgent:
    """``relay-client http ORIGIN --inspect 127.0.0.1:PORT``, up."""
    port = free_port()
    argv = python_module(
        "relay_client", "http", str(origin.port), "--server", relay.server_url, "--token", str(relay.token),
        "--inspect", f"127.0.0.1:{port}",
    )
    process = processes.start("inspected-agent", argv)
    match = process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
    wait_until(lambda: fetch(port, "/metrics", f"127.0.0.1:{port}")[0] == 200, START_TIMEOUT, message="inspector up")
    return InspectedAgent(process, match.group(1), port)


@pytest.fixture
def relay_dir(tmp_path: Path) -> Path:
    path = tmp_path / "relay-data"
    path.mkdir()
    return path


async def test_a_request_through_the_agent_moves_its_counters_and_the_ngrok_metrics_stay(
    processes: ProcessGroup, origin: Origin, relay_dir: Path, client: aiohttp.ClientSession
) -> None:
    relay = start_relay(processes, relay_dir)
    agent = start_inspected_agent(processes, relay, origin)
    status, headers, body = fetch(agent.inspect_port, "/metrics", f"127.0.0.1:{agent.inspect_port}")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert AGENT_METRICS <= family_names(body.decode()), family_names(body.decode())
    before = agent.metrics()
    assert value(before, "relay_client_connected") == 1
    assert value(before, "relay_client_reconnects_total") == 0

    payload = b"y" * 2048
    async with client.put(f"{agent.public_url}/agent-metered", data=payload) as response:
        assert response.status == 200
        answer = await response.read()
    after = wait_for_move(agent.metrics, before, "relay_client_requests_total", 1, status_class="2xx", method="PUT")
    assert delta(before, after, "relay_client_requests_total", status_class="2xx", method="PUT") == 1
    assert delta(before, after, "relay_client_bytes_in_total") == len(payload)
    assert delta(before, after, "relay_client_bytes_out_total") == len(answer)
    assert delta(before, after, "relay_client_request_duration_seconds_count") == 1
    assert delta(before, after, "relay_client_request_errors_total") == 0

    status, _, tunnels = fetch(agent.inspect_port, "/api/tunnels", f"127.0.0.1:{agent.inspect_port}")
    assert status == 200
    assert json.loads(tunnels)["tunnels"][0]["metrics"]["http"]["count"] == 1  # ngrok's shape, kept


def test_the_agent_metrics_answer_only_to_a_loopback_host(processes: ProcessGroup, origin: Origin, relay_dir: Path) -> None:
    relay = start_relay(processes, relay_dir)
    agent = start_inspected_agent(processes, relay, origin)
    status, _, body = fetch(agent.inspect_port, "/metrics", "metrics.attacker.example")
    assert status == 403, body[:200]
    assert b"relay_client" not in body


def test_the_connected_gauge_drops_with_the_relay_and_the_reconnect_counts(
    processes: ProcessGroup, origin: Origin, relay_dir: Path
) -> None:
    relay = start_relay(processes, relay_dir)
    agent = start_inspected_agent(processes, relay, origin)
    forwarding = agent.process.mark()
    relay.process.kill()
    wait_until(lambda: value(agent.metrics(), "relay_client_connected") == 0, RECONNECT_TIMEOUT, message="disconnected")
    start_relay(processes, relay_dir, port=relay.port, expect_paste_line=False)
    agent.process.wait_for_line(FORWARDING_LINE, timeout=RECONNECT_TIMEOUT, after=forwarding)
    wait_until(lambda: value(agent.metrics(), "relay_client_connected") == 1, RECONNECT_TIMEOUT, message="reconnected")
    assert value(agent.metrics(), "relay_client_reconnects_total") == 1
