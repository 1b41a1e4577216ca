"""RedisRegistry against a real redis-server: several nodes in one process, fake tunnels, no HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from relay_server.fleet.errors import FleetUnavailable
from relay_server.fleet.registry import RENEW_BATCH, RedisRegistry
from relay_server.fleet.route import RemoteRoute
from relay_server.registry import NameTaken, Owner
from support.processes import ProcessGroup
from support.redis import RedisServer, start_redis

from .fakes import FakeTunnel, eventually

#: Short leases so death and expiry show within seconds; a long resync so only pub/sub can be fast.
TTL = 2.0
RESYNC = 600.0

ALICE = Owner("tok_alice", "agent-alice")
BOB = Owner("tok_bob", "agent-bob")


@pytest.fixture
async def fleet(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisRegistry]]:
    """Factory of started nodes on the test's Redis; every node is stopped at the end."""
    nodes: list[RedisRegistry] = []

    async def make(node_id: str, name_grace: float = 0.0, resync: float = RESYNC) -> RedisRegistry:
        registry = RedisRegistry(
            redis_server.url, f"http://127.0.0.1:1{len(nodes)}000", node_id=node_id,
            name_grace=name_grace, lease_ttl=TTL, resync_interval=resync,
        )
        nodes.append(registry)
        assert await registry.start(wait=10), f"node {node_id} did not connect to {redis_server.url}"
        return registry

    yield make
    for node in nodes:
        await node.stop(release=False)


def commands_processed(server: RedisServer) -> int:
    """Redis's own count of commands it has run (read with a blocking client: no event loop turn)."""
    with redis.Redis(port=server.port, host="127.0.0.1") as client:
        return int(client.info("stats")["total_commands_processed"])


async def test_a_name_claimed_on_one_node_routes_from_another_through_pub_sub(fleet, redis_server) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    tunnel = FakeTunnel("app", ALICE)
    await a.claim(tunnel)

    assert a.lookup("app") is tunnel
    route = await eventually(lambda: b.lookup("app"), 10, "route on node b")  # the resync is 10 min away
    assert route == RemoteRoute("app", "node-a", a.advertise)
    assert len(b) == 0 and list(b) == []


async def test_a_lookup_answers_from_memory_without_a_redis_command(fleet, redis_server) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    await a.claim(FakeTunnel("app", ALICE))
    await eventually(lambda: b.lookup("app"), 10, "route on node b")

    baseline = commands_processed(redis_server)
    baseline = commands_processed(redis_server) - baseline  # what reading the counter itself costs
    before = commands_processed(redis_server)
    results = [b.lookup("app") for _ in range(1000)] + [b.lookup("nobody") for _ in range(1000)]
    after = commands_processed(redis_server)

    assert after - before == baseline
    assert results[0] == RemoteRoute("app", "node-a", a.advertise) and results[-1] is None


async def test_a_second_agent_is_refused_a_name_held_on_another_node(fleet) -> None:
    a, _b, c = await fleet("node-a"), await fleet("node-b"), await fleet("node-c")
    await a.claim(FakeTunnel("app", ALICE))

    intruder = FakeTunnel("app", BOB)
    with pytest.raises(NameTaken, match="in use by another agent"):
        await c.claim(intruder)

    assert list(c) == []
    assert await eventually(lambda: c.lookup("app"), 10) == RemoteRoute("app", "node-a", a.advertise)


async def test_two_nodes_racing_for_one_name_give_it_to_exactly_one(fleet) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")

    results = await asyncio.gather(
        a.claim(FakeTunnel("race", ALICE)), b.claim(FakeTunnel("race", BOB)), return_exceptions=True
    )

    assert sorted(type(r).__name__ for r in results) == ["NameTaken", "NoneType"]
    assert len(a) + len(b) == 1


async def test_a_dead_nodes_names_stop_routing_and_are_free_after_the_lease_ttl(fleet) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    await a.claim(FakeTunnel("app", ALICE))
    await eventually(lambda: b.lookup("app"), 10, "route on node b")

    await a.stop(release=False)  # a crash: no goodbye, the lease just stops being renewed
    died = time.monotonic()
    with pytest.raises(NameTaken):
        await b.claim(FakeTunnel("app", BOB))  # still leased to the dead node for now

    await eventually(lambda: b.lookup("app") is None, 10, "dead route dropped")
    assert time.monotonic() - died < TTL + 2.0  # within the lease TTL (plus scheduling slack)

    async def claim_free() -> bool:
        try:
            await b.claim(FakeTunnel("app", BOB))
        except NameTaken:
            return False
        return True

    deadline = time.monotonic() + 10
    while not await claim_free():
        assert time.monotonic() < deadline, "the dead node's name never became free"
        await asyncio.sleep(0.1)
    assert b.lookup("app").owner == BOB


async def test_a_clean_release_frees_the_name_everywhere_at_once(fleet) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    tunnel = FakeTunnel("app", ALICE)
    await a.claim(tunnel)
    await eventually(lambda: b.lookup("app"), 10, "route on node b")

    tunnel.accepting, tunnel.said_goodbye = False, True
    await a.release(tunnel)

    await eventually(lambda: b.lookup("app") is None, 10, "route dropped on node b")
    await b.claim(FakeTunnel("app", BOB))


async def test_a_lost_agents_name_is_held_for_its_token_on_every_node(fleet) -> None:
    a, b = await fleet("node-a", name_grace=30), await fleet("node-b", name_grace=30)
    tunnel = FakeTunnel("app", ALICE)
    await a.claim(tunnel)
    await eventually(lambda: b.lookup("app"), 10, "route on node b")

    tunnel.accepting = False  # vanished without a goodbye
    await a.release(tunnel)

    await eventually(lambda: b.lookup("app") is None, 10, "held name not routed")
    with pytest.raises(NameTaken, match="held for its previous agent.*free in"):
        await b.claim(FakeTunnel("app", BOB))
    comeback = FakeTunnel("app", Owner("tok_alice", "another-process-of-alice"))
    await b.claim(comeback)  # the same token may take it back, on any node
    assert b.lookup("app") is comeback
    assert await eventually(lambda: a.lookup("app"), 10) == RemoteRoute("app", "node-b", b.advertise)


async def test_the_same_agent_reconnecting_to_another_node_evicts_its_old_connection(fleet) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    old = FakeTunnel("app", ALICE)
    await a.claim(old)

    new = FakeTunnel("app", ALICE)
    await b.claim(new)

    await eventually(lambda: old.evicted, 10, "old connection evicted")
    assert "another relay node" in old.evicted
    assert new.evicted is None
    assert await eventually(lambda: a.lookup("app"), 10) == RemoteRoute("app", "node-b", b.advertise)
    await a.release(old)  # the evicted connection ends: it must not free the name it no longer holds
    await asyncio.sleep(TTL)
    with pytest.raises(NameTaken):
        await a.claim(FakeTunnel("app", BOB))


async def test_with_redis_down_claims_fail_clearly_and_known_routes_keep_answering(fleet, redis_server) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    tunnel = FakeTunnel("app", ALICE)
    await a.claim(tunnel)
    await eventually(lambda: b.lookup("app"), 10, "route on node b")

    redis_server.kill()

    await eventually(lambda: a.degraded and b.degraded, 15, "nodes degraded")
    with pytest.raises(FleetUnavailable, match="Redis .* is unreachable.*try again"):
        await a.claim(FakeTunnel("new", BOB))
    assert a.lookup("new") is None and list(a) == [tunnel]
    await asyncio.sleep(TTL * 2)  # no heartbeat can arrive: routes stay, the node is not presumed dead
    assert a.lookup("app") is tunnel
    assert b.lookup("app") == RemoteRoute("app", "node-a", a.advertise)
    assert a.status()["degraded"] is True and a.status()["error"]


async def test_a_restarted_empty_redis_gets_every_name_back_from_the_nodes(
    fleet, redis_server: RedisServer, processes: ProcessGroup
) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    await a.claim(FakeTunnel("app", ALICE))
    await b.claim(FakeTunnel("api", BOB))
    redis_server.kill()
    await eventually(lambda: a.degraded and b.degraded, 15, "nodes degraded")

    restarted = start_redis(processes, redis_server.port)  # same address, no data

    await eventually(lambda: not a.degraded and not b.degraded, 15, "nodes healthy again")
    with redis.Redis(port=restarted.port, host="127.0.0.1", decode_responses=True) as client:
        assert sorted(client.scan_iter("lr:route:*")) == ["lr:route:api", "lr:route:app"]
    with pytest.raises(NameTaken):
        await b.claim(FakeTunnel("app", BOB))
    await b.claim(FakeTunnel("fresh", BOB))
    assert await eventually(lambda: a.lookup("fresh"), 10) == RemoteRoute("fresh", "node-b", b.advertise)
    assert a.lookup("api") == RemoteRoute("api", "node-b", b.advertise)


async def test_the_periodic_resync_repairs_a_missed_event_and_ignores_nodes_without_a_heartbeat(
    fleet, redis_server
) -> None:
    b = await fleet("node-b", resync=0.3)
    with redis.Redis(port=redis_server.port, host="127.0.0.1") as client:  # written behind the fleet's back
        client.set("lr:node:node-x", "http://127.0.0.1:9", px=60_000)
        client.set("lr:route:ghost", '{"node":"node-x","url":"http://127.0.0.1:9","tok":"","key":"k"}', px=60_000)
        client.set("lr:route:orphan", '{"node":"node-gone","url":"http://127.0.0.1:8","tok":"","key":"k"}', px=60_000)
        client.set("lr:route:junk", "not json", px=60_000)

    assert await eventually(lambda: b.lookup("ghost"), 10, "resync found the route") == RemoteRoute(
        "ghost", "node-x", "http://127.0.0.1:9"
    )
    assert b.lookup("orphan") is None and b.lookup("junk") is None


async def test_a_tokens_tunnels_on_other_live_nodes_are_counted_for_its_limit(fleet) -> None:
    a, b = await fleet("node-a"), await fleet("node-b")
    await a.claim(FakeTunnel("one", ALICE))
    await a.claim(FakeTunnel("two", Owner("tok_alice", "second-agent")))
    await a.claim(FakeTunnel("other", BOB))

    await eventually(lambda: b.lookup("other"), 10, "every claim seen on node b")  # the last one published
    assert b.remote_tunnels_of("tok_alice") == 2
    assert b.remote_tunnels_of("tok_alice", except_name="one") == 1  # the agent of "one" moving to b
    assert b.remote_tunnels_of("tok_bob") == 1 and b.remote_tunnels_of("tok_nobody") == 0

    await a.stop(release=False)
    await eventually(lambda: b.remote_tunnels_of("tok_alice") == 0, 10, "a dead node's tunnels not counted")


# ------------------------------------------------------------------ renewal in batches


class RecordingScript:
    """Wraps the heartbeat's Lua script: remembers (heartbeat?, names) of every call, then runs it."""

    def __init__(self, script) -> None:
        self.script, self.calls = script, []

    async def __call__(self, *, keys, args):
        self.calls.append((args[4] == "1", len(keys) - 1))
        return await self.script(keys=keys, args=args)


def rounds_of(calls: list[tuple[bool, int]]) -> list[list[int]]:
    """The calls grouped into heartbeat rounds (each begins with the call that beats the heart)."""
    rounds: list[list[int]] = []
    for beat, size in calls:
        if beat:
            rounds.append([])
        if rounds:
            rounds[-1].append(size)
    return rounds


async def test_a_node_with_many_names_renews_them_in_batches_and_keeps_every_lease_alive(
    fleet, redis_server
) -> None:
    count = 2 * RENEW_BATCH + 137
    a, b = await fleet("node-a"), await fleet("node-b")
    recorder = RecordingScript(a._renew_script)
    a._renew_script = recorder
    tunnels = [FakeTunnel(f"t{i}", Owner("tok_many", f"agent-{i}")) for i in range(count)]
    for tunnel in tunnels:
        await a.claim(tunnel)
    with redis.Redis(port=redis_server.port, host="127.0.0.1", decode_responses=True) as client:
        client.delete("lr:route:t5", f"lr:route:t{count - 3}")  # missing: in the first and the last batch
        client.set(f"lr:route:t{RENEW_BATCH + 7}", '{"node":"node-b","url":"http://127.0.0.1:1","tok":"x","key":"y"}')

    await asyncio.sleep(TTL * 2.5)  # several renewals, past every lease's first TTL

    complete = rounds_of(recorder.calls)[:-1]  # the last round may still be running
    assert len(complete) >= 2, recorder.calls
    assert all(sizes == [RENEW_BATCH, RENEW_BATCH, 137] for sizes in complete), complete
    lost = tunnels[RENEW_BATCH + 7]
    assert lost.evicted and "taken over" in lost.evicted  # a name lost in the second batch is reported
    with redis.Redis(port=redis_server.port, host="127.0.0.1", decode_responses=True) as client:
        alive = {key[len("lr:route:"):] for key in client.scan_iter("lr:route:*", count=1000)}
        ttls = [client.pttl(f"lr:route:t{i}") for i in (0, RENEW_BATCH, count - 1)]
    assert alive == {t.name for t in tunnels}  # the two deleted ones were put back, none expired
    assert all(0 < ttl <= TTL * 1000 for ttl in ttls), ttls
    assert await eventually(lambda: b.lookup(f"t{count - 1}"), 10) == RemoteRoute(f"t{count - 1}", "node-a", a.advertise)


async def test_a_node_without_tunnels_still_beats_its_heart_in_one_call(fleet, redis_server) -> None:
    a = await fleet("node-a")
    recorder = RecordingScript(a._renew_script)
    a._renew_script = recorder

    await eventually(lambda: len(recorder.calls) >= 2, 10, "two heartbeats")

    assert set(recorder.calls) == {(True, 0)}
    with redis.Redis(port=redis_server.port, host="127.0.0.1", decode_responses=True) as client:
        assert client.get("lr:node:node-a") == a.advertise
