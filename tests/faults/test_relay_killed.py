"""The relay killed mid-download and restarted: clients in flight see the break, the agent comes back by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from faults.checks import assert_tunnel_works, status_of, wait_for_status
from faults.downloads import InFlight
from faults.procstats import Baseline
from support.localrelay import FORWARDING_LINE, start_agent, start_origin, start_relay
from support.processes import ProcessGroup

#: Times the relay is killed and restarted.
REPETITIONS = 2

#: Seconds from the restarted relay being healthy to the agent serving again: its backoff
#: grows 0.5, 1, 2, 4... while the relay is down, so the next attempt is at most a few seconds off.
RECONNECT_TIMEOUT = 20.0


@pytest.mark.timeout(300)
async def test_killing_the_relay_mid_download_breaks_the_downloads_and_the_agent_is_back_under_its_name(
    processes: ProcessGroup, tmp_data_dir: Path
) -> None:
    relay = start_relay(processes, tmp_data_dir)
    origin = start_origin(processes)
    agent = start_agent(processes, relay, str(origin.port), relay.token)
    await assert_tunnel_works(agent.public_url)

    async def one_fault(round_: str) -> None:
        nonlocal relay
        in_flight = await InFlight.start(relay.port, agent)
        mark = agent.process.mark()
        try:
            relay.process.kill()
            await in_flight.finish_and_assert_cut_off()
        finally:
            await in_flight.abort()
        assert agent.process.returncode is None, agent.process.output()
        assert await status_of(f"{agent.public_url}/while-down", timeout=3) != 200

        relay = start_relay(processes, tmp_data_dir, port=relay.port, expect_paste_line=False)
        restarted = time.monotonic()
        again = agent.process.wait_for_line(FORWARDING_LINE, after=mark, timeout=RECONNECT_TIMEOUT)
        assert again.group(1) == agent.public_url, f"round {round_}: came back as {again.group(1)}"
        remaining = max(1.0, RECONNECT_TIMEOUT - (time.monotonic() - restarted))
        await wait_for_status(f"{agent.public_url}/back-{round_}", 200, remaining, f"round {round_}")
        await assert_tunnel_works(agent.public_url)

    await one_fault("warm-up")
    agent_baseline = Baseline.take(agent.process.pid, "agent")
    for round_ in range(REPETITIONS):
        await one_fault(str(round_))

    # The agent dropped the streams (and their local requests) the dead relay had opened.
    agent_baseline.assert_back()
    assert relay.health()["tunnels"] == 1
