"""An agent killed mid-download: every public client sees a broken body, the relay lets go, a new agent serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.checks import assert_tunnel_works, wait_for_status
from faults.downloads import InFlight
from faults.procstats import Baseline
from support.localrelay import start_agent, start_origin, start_relay
from support.processes import ProcessGroup

#: Times the agent is killed mid-download (a leak per fault adds up past the tolerance).
REPETITIONS = 3

#: The name every agent of the test asks for (the same token may always reclaim it).
NAME = "killed"

#: Seconds a new agent gets to serve the name again after the old one was killed.
RECLAIM_TIMEOUT = 20.0


@pytest.mark.timeout(300)
async def test_killing_the_agent_mid_download_cuts_every_client_off_visibly_and_the_relay_lets_go_of_the_streams(
    processes: ProcessGroup, tmp_data_dir: Path
) -> None:
    relay = start_relay(processes, tmp_data_dir)
    origin = start_origin(processes)
    agent = start_agent(processes, relay, str(origin.port), relay.token, NAME)

    # Warm-up: whole downloads of both kinds and one fault, so the baseline holds what a warm relay holds.
    await assert_tunnel_works(agent.public_url)
    in_flight = await InFlight.start(relay.port, agent)
    agent.process.kill()
    await in_flight.finish_and_assert_cut_off()
    agent = start_agent(processes, relay, str(origin.port), relay.token, NAME)
    await wait_for_status(f"{agent.public_url}/warm", 200, RECLAIM_TIMEOUT, "the warm-up agent")
    await assert_tunnel_works(agent.public_url)
    baseline = Baseline.take(relay.process.pid, "relay")

    for round_ in range(REPETITIONS):
        in_flight = await InFlight.start(relay.port, agent)
        try:
            agent.process.kill()
            await in_flight.finish_and_assert_cut_off()
        finally:
            await in_flight.abort()
        assert relay.process.returncode is None, relay.process.output()

        agent = start_agent(processes, relay, str(origin.port), relay.token, NAME)
        assert agent.name == NAME, f"round {round_}: the new agent got {agent.name!r}"
        await wait_for_status(f"{agent.public_url}/round-{round_}", 200, RECLAIM_TIMEOUT, f"round {round_}")
        await assert_tunnel_works(agent.public_url)

    # The streams the dead agents held are gone from the relay: no socket, no buffered window left behind.
    baseline.assert_back()
    assert relay.health()["tunnels"] == 1
