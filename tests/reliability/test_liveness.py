"""Liveness: a half-open connection (no FIN, no RST) is noticed on both sides, and the agent comes back.

A loopback proxy in the test process (``support.stallproxy``) sits between the
agent and the relay; ``stall()`` stops every byte both ways without closing a
socket.  Heartbeats are shortened through the test knobs
``RELAY_HEARTBEAT_INTERVAL`` and ``RELAY_CLIENT_PING_INTERVAL`` so the test
takes seconds, not the production 20 s.
"""

from __future__ import annotations

import asyncio
import time

from relay_client import connection
from relay_server import config
from support import stallproxy
from support.localrelay import FORWARDING_LINE, get_direct, wait_until

from .conftest import FAST_HEARTBEAT, create_token_in, start_agent_with, start_relay_with

#: Seconds any one wait may take (heartbeats are 1 s here; the rest is slack for a loaded machine).
CEILING = 30.0


def test_production_heartbeats_notice_a_dead_peer_within_a_bounded_time():
    # relay: a ping every interval, no pong within half of it closes; agent: ping interval + timeout + close.
    assert config.HEARTBEAT_INTERVAL * 1.5 <= 30
    assert connection.PING_INTERVAL + connection.PING_TIMEOUT + connection.CLOSE_TIMEOUT <= 45


def test_a_stalled_path_is_noticed_by_both_sides_and_the_agent_reclaims_its_name(processes, data_dir, origin):
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, env={"RELAY_HEARTBEAT_INTERVAL": FAST_HEARTBEAT})
    with stallproxy.start(0, relay.port) as proxy:
        agent = start_agent_with(
            processes, proxy.port, str(origin.port), token, "steady", env={"RELAY_CLIENT_PING_INTERVAL": FAST_HEARTBEAT}
        )
        assert agent.public_url.endswith(f":{relay.port}")
        assert get_direct(relay.port, "/", agent.host, 10.0)[0] == 200
        out_mark, err_mark = agent.process.mark(), agent.process.mark("stderr")

        proxy.stall()
        stalled_at = time.monotonic()
        # The relay notices: the name answers 502 "tunnel offline" (at once, not after a hang).
        wait_until(
            lambda: get_direct(relay.port, "/", agent.host, 10.0)[0] == 502,
            CEILING, interval=0.2, message="the relay noticing the dead agent",
        )
        started = time.monotonic()
        assert get_direct(relay.port, "/", agent.host, 10.0)[0] == 502
        assert time.monotonic() - started < 5, "a request to a lost tunnel must not hang"
        # The agent notices too, and tries again.
        agent.process.wait_for_line(r"tunnel connection lost", stream="stderr", timeout=CEILING, after=err_mark)
        assert time.monotonic() - stalled_at < CEILING
        assert relay.process.returncode is None and agent.process.returncode is None

        proxy.resume()
        line = agent.process.wait_for_line(FORWARDING_LINE, timeout=CEILING, after=out_mark)
        assert line.group(1) == agent.public_url, "the agent came back under the same name"
        wait_until(
            lambda: get_direct(relay.port, "/", agent.host, 10.0)[0] == 200,
            CEILING, interval=0.2, message="the tunnel answering again",
        )
        assert proxy.accepted >= 2
    assert "Traceback" not in agent.process.output() + relay.process.output()


async def test_the_agent_keeps_a_quiet_healthy_tunnel_up(processes, data_dir, origin):
    # Heartbeats alone keep an idle tunnel up: no false alarm over several intervals.
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, env={"RELAY_HEARTBEAT_INTERVAL": FAST_HEARTBEAT})
    agent = start_agent_with(
        processes, relay.port, str(origin.port), token, "quiet", env={"RELAY_CLIENT_PING_INTERVAL": FAST_HEARTBEAT}
    )
    await asyncio.sleep(5)
    assert agent.process.count(r"tunnel connection lost", stream="stderr") == 0, agent.process.output()
    assert agent.process.count(FORWARDING_LINE) == 1
    assert get_direct(relay.port, "/", agent.host, 10.0)[0] == 200
