"""A stalled network between agent and relay (bytes stop, no FIN, no RST): noticed, answered, recovered."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults.checks import assert_tunnel_works, get, wait_for_status
from faults.procstats import Baseline
from support import stallproxy
from support.localrelay import FORWARDING_LINE, START_TIMEOUT, agent_argv, start_origin, start_relay, wait_until
from support.processes import ProcessGroup, child_env

#: The relay's --response-timeout here: how long a public request may wait on a silent agent.
RESPONSE_TIMEOUT = 5.0

#: The agent's keepalive interval in this test (the product's test knob; 20 s by default), so the
#: test takes seconds, not a minute. Not lower: on a loaded machine a pong may be late.
PING_INTERVAL = "3"

#: Extra seconds, beyond a timeout, that a loaded machine may take to act on it.
SLACK = 15.0

#: Seconds a new agent connection (through the resumed proxy) gets to be serving.
RECOVERY_TIMEOUT = 30.0

#: What the agent is started with: its keepalive knob (child_env keeps RELAY_* out otherwise).
AGENT_ENV = {"RELAY_CLIENT_PING_INTERVAL": PING_INTERVAL}

_READ_CONSTANTS = (
    "import json; from relay_client import connection as c; "
    "print(json.dumps([c.PING_INTERVAL, getattr(c, 'PING_TIMEOUT', c.PING_INTERVAL), getattr(c, 'CLOSE_TIMEOUT', 10.0)]))"
)


def _detection_ceiling() -> float:
    """Longest the agent may take to dial again: keepalive interval + pong timeout + close wait, plus slack.

    Read from the agent's own module under the agent's environment, so a change of the
    product's constants (or a knob that stops working) moves the ceiling with it.
    """
    result = subprocess.run(
        [sys.executable, "-c", _READ_CONSTANTS], capture_output=True, text=True, timeout=60, env=child_env(AGENT_ENV)
    )
    assert result.returncode == 0, result.stderr
    interval, timeout, close_wait = json.loads(result.stdout)
    return interval + timeout + close_wait + SLACK


@pytest.mark.timeout(300)
async def test_a_stalled_network_is_noticed_requests_meanwhile_get_a_bounded_answer_and_the_tunnel_recovers(
    processes: ProcessGroup, tmp_data_dir: Path
) -> None:
    ceiling = _detection_ceiling()
    relay = start_relay(processes, tmp_data_dir, extra=("--response-timeout", str(RESPONSE_TIMEOUT)))
    origin = start_origin(processes)
    with stallproxy.start(0, relay.port) as proxy:
        # agent -> proxy -> relay: the agent knows the relay only through the proxy.
        argv = agent_argv(proxy.port, str(origin.port), relay.token, "stalled")
        agent = processes.start("agent-via-proxy", argv, child_env(AGENT_ENV))
        first = agent.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
        public_url = first.group(1)
        await assert_tunnel_works(public_url)
        relay_baseline = Baseline.take(relay.process.pid, "relay")
        agent_baseline = Baseline.take(agent.pid, "agent")

        mark = agent.mark()
        dialled = proxy.accepted
        announced = agent.count(r"^Forwarding ")
        proxy.stall()
        stalled_at = time.monotonic()

        # A public request now reaches a relay whose agent cannot hear it: a bounded answer, never a hang.
        started = time.monotonic()
        status, headers, body = await get(f"{public_url}/during-stall", timeout=RESPONSE_TIMEOUT + SLACK)
        elapsed = time.monotonic() - started
        assert status in (502, 504), (status, headers, body[:300])
        assert headers.get("X-Relay-Error") in ("agent-timeout", "tunnel-offline"), headers
        assert elapsed <= RESPONSE_TIMEOUT + SLACK, f"the answer took {elapsed:.1f}s"

        # The agent notices the silence by itself and dials again (the new connection is the proof).
        wait_until(lambda: proxy.accepted > dialled, ceiling, interval=0.2, message="the agent dialling again")
        noticed_after = time.monotonic() - stalled_at
        assert agent.count(r"^Forwarding ") == announced, "the agent announced a tunnel while the network was stalled"
        assert agent.returncode is None, agent.output()

        proxy.resume()
        again = agent.wait_for_line(FORWARDING_LINE, after=mark, timeout=RECOVERY_TIMEOUT)
        assert again.group(1) == public_url, f"the agent came back as {again.group(1)}, not {public_url}"
        await wait_for_status(f"{public_url}/after-stall", 200, RECOVERY_TIMEOUT, "the recovered tunnel")
        await assert_tunnel_works(public_url)

        # The dead connection is gone on both sides (the relay dropped it, the agent too).
        wait_until(lambda: relay.health()["tunnels"] == 1, RECOVERY_TIMEOUT, message="one tunnel on the relay")
        relay_baseline.assert_back(timeout=ceiling)
        agent_baseline.assert_back()
        print(f"stall noticed by the agent after {noticed_after:.1f}s (ceiling {ceiling:g}s)")
