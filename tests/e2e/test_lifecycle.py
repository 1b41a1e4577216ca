"""Tunnels over time: health counts, the agent riding out a relay restart, the library's context manager."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from support.localrelay import FORWARDING_LINE, Origin, Relay, get_direct, start_agent, start_relay, wait_until
from support.processes import ProcessGroup

#: Seconds an agent gets to notice a restarted relay and serve again.
RECONNECT_TIMEOUT = 15.0


def test_health_reports_ok_and_the_number_of_live_tunnels(processes: ProcessGroup, tmp_data_dir: Path, origin: Origin) -> None:
    relay = start_relay(processes, tmp_data_dir)
    status, body = get_direct(relay.port, "/_relay/health", host=f"localhost:{relay.port}")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["tunnels"] == 0

    first = start_agent(processes, relay, str(origin.port), relay.token)
    second = start_agent(processes, relay, str(origin.port), relay.token)
    assert first.name != second.name
    assert relay.health()["tunnels"] == 2

    first.process.stop()
    wait_until(lambda: relay.health()["tunnels"] == 1, 10, message="health showing 1 tunnel after an agent stopped")
    assert relay.health()["status"] == "ok"


async def _get_status(client: aiohttp.ClientSession, url: str) -> int | None:
    """Status of GET url, or None if the relay could not be reached."""
    try:
        async with client.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
        return None


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["relay-crashes", "relay-stops"])
async def test_the_agent_reconnects_by_itself_after_the_relay_restarts(
    stop_signal: int, processes: ProcessGroup, tmp_data_dir: Path, origin: Origin, client: aiohttp.ClientSession
) -> None:
    relay = start_relay(processes, tmp_data_dir)
    agent = start_agent(processes, relay, str(origin.port), relay.token)
    async with client.get(f"{agent.public_url}/before-restart") as response:
        assert response.status == 200

    mark = agent.process.mark()
    relay.process.signal(stop_signal)
    relay.process.wait_exit(10)
    assert await _get_status(client, f"{agent.public_url}/while-down") is None

    started = time.monotonic()
    start_relay(processes, tmp_data_dir, port=relay.port, expect_paste_line=False)
    again = agent.process.wait_for_line(FORWARDING_LINE, after=mark, timeout=RECONNECT_TIMEOUT)
    assert again.group(1) == agent.public_url
    assert again.group(4) == agent.local_url

    deadline = started + RECONNECT_TIMEOUT
    while (status := await _get_status(client, f"{agent.public_url}/after-restart")) != 200:
        assert time.monotonic() < deadline, f"URL answered {status} {RECONNECT_TIMEOUT:g}s after the relay restarted"
        await asyncio.sleep(0.2)
    async with client.get(f"{agent.public_url}/after-restart") as response:
        assert (await response.json())["raw_path"] == "/after-restart"
    assert agent.process.returncode is None


async def test_the_library_tunnel_gives_a_public_url_that_answers(
    relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    import relay_client  # here, not at the top: a broken product import then fails this test, not collection

    async with relay_client.Tunnel(local=origin.url, server=relay.server_url, token=relay.token) as tunnel:
        url = tunnel.public_url
        assert url.startswith("http://") and url.endswith(f".localhost:{relay.port}")
        async with client.post(f"{url}/from-library?x=1", data=b"library body") as response:
            assert response.status == 200
            info = await response.json()
        assert info["raw_path"] == "/from-library?x=1"
        assert info["method"] == "POST"
        assert info["body_length"] == len(b"library body")

    deadline = time.monotonic() + 10
    while True:  # once the block ends the tunnel goes away
        async with client.get(f"{url}/after-close") as response:
            await response.read()
            if response.status == 502 and response.headers.get("X-Relay-Error") == "tunnel-offline":
                break
        assert time.monotonic() < deadline, f"{url} still answered {response.status} after the Tunnel closed"
        await asyncio.sleep(0.1)
