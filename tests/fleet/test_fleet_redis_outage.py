"""Redis stopped under a running fleet: known routes keep serving, new claims fail clearly, all recovers with Redis.

Redis runs as in production, with append-only persistence (tokens live there),
in a temporary directory; it is stopped (SIGTERM by PID) for longer than two
lease TTLs, so every lease has lapsed when it comes back on the same port and
the nodes must put their names back themselves.

A Redis without persistence restarted under the fleet comes back empty: no
route, no token.  The nodes put both back from what they hold (names they
serve, their copy of the token records), no agent is disconnected as if its
token had been revoked, and a revoke made afterwards still disconnects at once.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import redis

from fleet.conftest import (
    TEST_LEASE_TTL,
    Fleet,
    fleet_agent_argv,
    start_fleet,
    start_fleet_agent,
    start_stream_origin,
)
from support.localrelay import FORWARDING_LINE, REFUSAL_TIMEOUT, relay_cli, wait_until
from support.processes import ProcessGroup
from support.redis import start_redis

#: How long Redis stays down while the test checks that known routes still serve (past two TTLs).
OUTAGE = 2 * TEST_LEASE_TTL + 2.0

#: Seconds a node gets to notice Redis is gone (or back) and say so on health.
HEALTH_WITHIN = 15.0

#: Seconds a retrying agent gets to connect once Redis is back (its backoff may be in a long step).
RECONNECT_WITHIN = 45.0

#: What a refused claim says on the agent's stderr while Redis is away.
UNAVAILABLE = re.compile(r"(?i)(redis|fleet|cluster).*(unavailable|unreachable|down|try again)")


def _answers(fleet: Fleet, index: int, name: str, path: str) -> bool:
    status, body = fleet.nodes[index].get(name, path, timeout=5.0)
    return status == 200 and json.loads(body)["raw_path"] == path


def _status(fleet: Fleet, index: int) -> str:
    return fleet.nodes[index].health()["status"]


@pytest.fixture
def outage(processes: ProcessGroup, tmp_path):
    """Redis with AOF in tmp_path, three nodes, the origin, a token, and agent ``steady`` on node 1."""
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    aof = ("--appendonly", "yes", "--appendfsync", "always", "--dir", str(redis_dir))
    redis = start_redis(processes, None, *aof)
    origin = start_stream_origin(processes)
    fleet = start_fleet(processes, tmp_path / "fleet", 3, redis=redis)
    token = fleet.create_token("--label", "outage")
    steady = start_fleet_agent(processes, fleet.nodes[:1], str(origin.port), token, "steady")
    for index in range(3):
        wait_until(lambda: _answers(fleet, index, "steady", "/before"), 10, message=f"steady on node {index + 1}")
        assert _status(fleet, index) == "ok"
    return fleet, origin, token, steady, aof


def test_with_redis_down_known_routes_serve_new_agents_get_a_clear_error_and_all_recovers_when_it_returns(
    outage, processes: ProcessGroup
) -> None:
    fleet, origin, token, steady, aof = outage
    port = fleet.redis.port

    fleet.redis.stop()
    stopped = time.monotonic()

    # Health says degraded on every node (still 200: the node serves what it knows).
    for index in range(3):
        wait_until(lambda: _status(fleet, index) == "degraded", HEALTH_WITHIN, message=f"node {index + 1} degraded")

    # A new agent is refused with a clear reason and keeps retrying (Redis may come back).
    newcomer = processes.start("newcomer", fleet_agent_argv(fleet.nodes[1:2], str(origin.port), token, "newcomer"))
    newcomer.wait_for_line(UNAVAILABLE.pattern, stream="stderr", timeout=REFUSAL_TIMEOUT + 5)
    assert newcomer.count(r"^Forwarding ") == 0, newcomer.output()
    assert "Traceback" not in newcomer.output(), newcomer.output()

    # The token commands cannot reach the store either: one clear line, non-zero exit.
    refused = relay_cli("token", "create", "--cluster", fleet.cluster)
    assert refused.returncode != 0
    assert refused.stdout.strip() == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "Traceback" not in refused.stderr

    # The route everyone knew keeps serving on every node, past two lease TTLs.
    rounds = 0
    while time.monotonic() - stopped < OUTAGE:
        for index in range(3):
            path = f"/during-{rounds}-{index}"
            status, body = fleet.nodes[index].get("steady", path, timeout=5.0)
            assert status == 200, f"node {index + 1} after {time.monotonic() - stopped:.1f}s: {status} {body[:300]!r}"
            assert json.loads(body)["raw_path"] == path
        rounds += 1
        time.sleep(0.3)
    assert newcomer.returncode is None, f"the refused agent gave up instead of retrying\n{newcomer.output()}"
    assert newcomer.count(r"^Forwarding ") == 0, newcomer.output()

    # Redis back on the same port, with its files (every lease in it has expired by now).
    fleet.redis = start_redis(processes, port, *aof)

    for index in range(3):
        wait_until(lambda: _status(fleet, index) == "ok", HEALTH_WITHIN, message=f"node {index + 1} ok again")
    newcomer.wait_for_line(FORWARDING_LINE, timeout=RECONNECT_WITHIN)
    fresh = start_fleet_agent(processes, fleet.nodes[2:], str(origin.port), token, "fresh")
    for index in range(3):
        wait_until(lambda: _answers(fleet, index, "newcomer", "/back"), 10, message=f"newcomer on node {index + 1}")
        wait_until(lambda: _answers(fleet, index, fresh.name, "/back"), 10, message=f"fresh on node {index + 1}")

    # The nodes put their names back: past another TTL, steady still answers everywhere and is still its own.
    time.sleep(TEST_LEASE_TTL + 1.0)
    for index in range(3):
        assert _answers(fleet, index, "steady", f"/after-{index}"), f"steady lost on node {index + 1}"
    other = fleet.create_token("--label", "other")
    intruder = processes.start("intruder", fleet_agent_argv(fleet.nodes[1:2], str(origin.port), other, "steady"))
    assert intruder.wait_exit(REFUSAL_TIMEOUT + 10) != 0, intruder.output()
    assert intruder.count(r"^Forwarding ") == 0, intruder.output()
    assert steady.process.returncode is None



#: Exit code of an agent whose token was refused (revoked).
AUTH_EXIT = 3


def _token_id(fleet: Fleet, label: str) -> str:
    """The id ``token list --cluster`` shows for the token with this label."""
    listing = relay_cli("token", "list", "--cluster", fleet.cluster)
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if line.rstrip().endswith(label)]
    return re.search(r"\btok_[0-9a-f]+\b", row).group(0)


def _stored(fleet: Fleet) -> tuple[set[str], set[str]]:
    """(route names, token ids) in Redis right now."""
    with redis.Redis(port=fleet.redis.port, host="127.0.0.1", decode_responses=True) as client:
        routes = {key[len("lr:route:"):] for key in client.scan_iter("lr:route:*")}
        return routes, set(client.hkeys("lr:tokens"))


def test_with_redis_restarted_without_persistence_tunnels_stay_up_and_names_and_tokens_come_back(
    processes: ProcessGroup, tmp_path
) -> None:
    origin = start_stream_origin(processes)
    fleet = start_fleet(processes, tmp_path / "fleet", 3)  # Redis without persistence
    token = fleet.create_token("--label", "doomed")
    other = fleet.create_token("--label", "bystander")
    steady = start_fleet_agent(processes, fleet.nodes[:1], str(origin.port), token, "steady")
    side = start_fleet_agent(processes, fleet.nodes[2:3], str(origin.port), other, "side")
    for index in range(3):
        wait_until(lambda: _answers(fleet, index, "steady", "/before"), 10, message=f"steady on node {index + 1}")
        wait_until(lambda: _answers(fleet, index, "side", "/before"), 10, message=f"side on node {index + 1}")
    ids = _stored(fleet)[1]  # ours, and the one the first node made at its first start
    assert {_token_id(fleet, "doomed"), _token_id(fleet, "bystander")} <= ids

    port = fleet.redis.port
    fleet.redis.kill()
    fleet.redis = start_redis(processes, port)  # same address, nothing in it

    # The nodes put the names and the token records back.
    wait_until(lambda: _stored(fleet) == ({"steady", "side"}, ids), 15, message=f"names and tokens {ids} back in Redis")
    for index in range(3):
        wait_until(lambda: _status(fleet, index) == "ok", HEALTH_WITHIN, message=f"node {index + 1} ok")
        wait_until(lambda: _answers(fleet, index, "steady", f"/after-{index}"), 10, message=f"steady on {index + 1}")
        wait_until(lambda: _answers(fleet, index, "side", f"/after-{index}"), 10, message=f"side on {index + 1}")
    time.sleep(2.0)  # a few token reloads and watcher sweeps on every node
    for agent in (steady, side):
        assert agent.process.returncode is None, agent.process.output()
        assert agent.process.count(r"^Forwarding ") == 1, agent.process.output()  # never disconnected
        assert "revoked" not in agent.process.output()

    # The token authenticates on every node: new agents with it connect to nodes 2 and 3.
    for index in (1, 2):
        again = start_fleet_agent(processes, fleet.nodes[index:index + 1], str(origin.port), token, f"again{index}")
        wait_until(lambda: _answers(fleet, 0, again.name, "/again"), 10, message=f"again{index} through node 1")

    # A revoke after the restart is an explicit event: its agents go at once, the others stay.
    doomed_id = _token_id(fleet, "doomed")
    revoked = relay_cli("token", "revoke", doomed_id, "--cluster", fleet.cluster)
    assert revoked.returncode == 0, revoked.stderr
    assert steady.process.wait_exit(15) == AUTH_EXIT, steady.process.output()
    assert f"token {doomed_id} was revoked" in steady.process.output()
    time.sleep(1.0)
    assert _stored(fleet)[1] == ids - {doomed_id}  # and no node wrote it back
    assert side.process.returncode is None
    for index in range(3):
        assert _answers(fleet, index, "side", f"/end-{index}")
