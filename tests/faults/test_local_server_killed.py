"""The local server killed mid-response: clients see a broken body, then 502, then service once it is back."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.checks import assert_tunnel_works, get, wait_for_status
from faults.downloads import InFlight
from faults.procstats import Baseline
from support.localrelay import start_agent, start_origin, start_relay
from support.processes import ProcessGroup

#: Times the local server is killed mid-response.
REPETITIONS = 3

#: Seconds a restarted local server gets to be reachable through the tunnel again.
RECOVERY_TIMEOUT = 20.0


@pytest.mark.timeout(300)
async def test_killing_the_local_server_mid_response_cuts_clients_off_then_answers_502_until_it_is_back(
    processes: ProcessGroup, tmp_data_dir: Path
) -> None:
    relay = start_relay(processes, tmp_data_dir)
    origin = start_origin(processes)
    agent = start_agent(processes, relay, str(origin.port), relay.token)

    async def one_fault(round_: str) -> None:
        nonlocal origin
        in_flight = await InFlight.start(relay.port, agent)
        try:
            origin.process.kill()
            await in_flight.finish_and_assert_cut_off()
        finally:
            await in_flight.abort()
        for process in (relay.process, agent.process):
            assert process.returncode is None, f"round {round_}: it died with the local server\n{process.output()}"

        # Nothing listens on the local port now: the relay says so, at once and clearly.
        status, headers, body = await get(f"{agent.public_url}/while-down")
        assert status == 502, (status, headers, body[:300])
        assert headers.get("X-Relay-Error") == "local-unreachable", headers
        assert b"local server" in body.lower(), body[:300]

        origin = start_origin(processes, port=origin.port)
        await wait_for_status(f"{agent.public_url}/back-{round_}", 200, RECOVERY_TIMEOUT, f"round {round_}")
        await assert_tunnel_works(agent.public_url)

    await assert_tunnel_works(agent.public_url)
    await one_fault("warm-up")
    relay_baseline = Baseline.take(relay.process.pid, "relay")
    agent_baseline = Baseline.take(agent.process.pid, "agent")

    for round_ in range(REPETITIONS):
        await one_fault(str(round_))

    # Neither side kept anything of the requests the dead server left hanging.
    agent_baseline.assert_back()
    relay_baseline.assert_back()
    assert agent.process.count(r"^Forwarding ") == 1, "the agent's tunnel dropped although only the local server died"
