"""A node killed outright: its agents move to another node within seconds, and its stale leases stop routing.

Three nodes and one Redis.  Agent ``survivor`` is started with ``--server``
node 1 then node 2; agent ``stranded`` knows only node 1, so its name has no
holder once node 1 dies.  Node 1 gets SIGKILL: no goodbye, no release, its
leases in Redis simply stop being renewed.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from fleet.conftest import (
    NODE_FAILED,
    NODE_UNREACHABLE,
    TEST_LEASE_TTL,
    Fleet,
    relay_error,
    start_fleet,
    start_fleet_agent,
    start_stream_origin,
)
from support.localrelay import FORWARDING_LINE, wait_until
from support.processes import ProcessGroup

#: The issue's bound: the name answers again on every live node within this many seconds of the kill.
FAILOVER_WITHIN = 10.0

#: Slack on top of the lease TTL before a dead node's lease must have stopped routing (heartbeat
#: period, the mirror's sweep, a loaded machine).
TTL_MARGIN = 3.0


def _answers(fleet: Fleet, node_index: int, name: str, path: str) -> bool:
    status, body = fleet.nodes[node_index].get(name, path, timeout=2.0)
    return status == 200 and json.loads(body)["raw_path"] == path


@pytest.fixture
def failover(processes: ProcessGroup, tmp_path):
    """Redis, three nodes, the origin, one token, and the two agents on node 1."""
    origin = start_stream_origin(processes)
    fleet = start_fleet(processes, tmp_path / "fleet", 3)
    token = fleet.create_token("--label", "failover")
    survivor = start_fleet_agent(processes, fleet.nodes[:2], str(origin.port), token, "survivor")
    stranded = start_fleet_agent(processes, fleet.nodes[:1], str(origin.port), token, "stranded")
    for index in range(3):  # both names answer everywhere before the crash
        wait_until(lambda: _answers(fleet, index, "survivor", "/before"), 10, message=f"survivor on node {index + 1}")
        wait_until(lambda: _answers(fleet, index, "stranded", "/before"), 10, message=f"stranded on node {index + 1}")
    return fleet, survivor, stranded


def test_a_killed_nodes_agent_reconnects_to_the_next_server_and_answers_on_every_live_node_within_10_s(
    failover,
) -> None:
    fleet, survivor, _ = failover
    mark = survivor.process.mark()
    fleet.nodes[0].process.kill()  # SIGKILL: nothing released
    killed = time.monotonic()

    pending = {1, 2}
    while pending and time.monotonic() - killed < FAILOVER_WITHIN:
        for index in sorted(pending):
            try:
                if _answers(fleet, index, "survivor", f"/after-{index}"):
                    pending.discard(index)
            except OSError:
                pass
        time.sleep(0.1)
    elapsed = time.monotonic() - killed

    assert not pending, (
        f"survivor did not answer on node(s) {sorted(i + 1 for i in pending)} within {FAILOVER_WITHIN:g}s"
        f"\n{survivor.process.output()}"
    )
    # It came back under its name, on node 2 (the next --server), and said so.
    match = survivor.process.wait_for_line(FORWARDING_LINE, after=mark, timeout=5)
    assert match.group(2) == "survivor"
    assert int(match.group(3)) == fleet.nodes[1].port, match.group(0)
    assert elapsed < FAILOVER_WITHIN


def test_a_dead_nodes_lease_never_routes_a_request_after_the_ttl(failover) -> None:
    fleet, _, stranded = failover
    fleet.nodes[0].process.kill()
    killed = time.monotonic()
    deadline = killed + TEST_LEASE_TTL + TTL_MARGIN

    # Node 2 is asked all along; node 3 not at all until the TTL is over, so it cannot have learned
    # of the death from a failed hop of its own: only the lapsed lease can have told it.
    seen_on_2: list[tuple[float, int, str | None]] = []
    while time.monotonic() < deadline:
        status, code, _ = relay_error(fleet.nodes[1], "stranded", "/during", timeout=5.0)
        seen_on_2.append((round(time.monotonic() - killed, 2), status, code))
        time.sleep(0.2)

    after: list[tuple[int, int, str | None]] = []
    for round_ in range(10):
        for index in (1, 2):
            status, code, body = relay_error(fleet.nodes[index], "stranded", f"/after-{round_}", timeout=5.0)
            after.append((index + 1, status, code))
        time.sleep(0.1)

    stale = {NODE_UNREACHABLE, NODE_FAILED}
    assert all(code not in stale for _, _, code in after), f"routed to the dead node after the TTL: {after}"
    # The name is simply offline now: the standard 502 a name without an agent gets.
    assert all(status == 502 and code == "tunnel-offline" for _, status, code in after), after
    # Before the TTL a request may still have tried the dead node; none ever hung or got a 200 from nowhere.
    assert all(status in (502, 503, 504) for _, status, _ in seen_on_2), seen_on_2
    assert stranded.process.returncode is None, "an agent whose relay died keeps retrying, it does not exit"


def test_the_name_of_a_dead_node_goes_to_another_token_once_the_lease_has_lapsed(
    failover, processes: ProcessGroup
) -> None:
    fleet, _, _ = failover
    fleet.nodes[0].process.kill()
    time.sleep(TEST_LEASE_TTL + TTL_MARGIN)
    origin = start_stream_origin(processes)
    other = fleet.create_token("--label", "newcomer")

    newcomer = start_fleet_agent(processes, fleet.nodes[2:], str(origin.port), other, "stranded")

    assert newcomer.name == "stranded"
    wait_until(lambda: _answers(fleet, 1, "stranded", "/newcomer"), 10, message="stranded answering via node 2")


def test_a_node_stopped_for_a_deploy_hands_its_agent_to_the_next_server_within_10_s(failover) -> None:
    fleet, survivor, _ = failover
    mark = survivor.process.mark()
    node1 = fleet.nodes[0].process
    node1.signal(signal.SIGTERM)  # a rolling upgrade: the node tells its agents to move on
    stopped = time.monotonic()

    wait_until(lambda: _answers(fleet, 2, "survivor", "/moved"), FAILOVER_WITHIN, message="survivor via node 3")
    match = survivor.process.wait_for_line(FORWARDING_LINE, after=mark, timeout=FAILOVER_WITHIN)
    assert int(match.group(3)) == fleet.nodes[1].port, match.group(0)
    assert time.monotonic() - stopped < FAILOVER_WITHIN + 2
    assert node1.wait_exit(30) == 0, node1.output()
    assert _answers(fleet, 1, "survivor", "/after-exit") and _answers(fleet, 2, "survivor", "/after-exit")
