"""RedisTokenStore against a real redis-server: tokens made on one node work on every node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from relay_server.fleet.tokens import RedisTokenStore
from relay_server.tokens import TokenStoreError
from support.processes import ProcessGroup
from support.redis import RedisServer, start_redis

from .fakes import eventually


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisTokenStore]]:
    """Factory of started token stores (relay nodes) on the test's Redis; stopped at the end."""
    made: list[RedisTokenStore] = []

    async def make(*, started: bool = True) -> RedisTokenStore:
        store = RedisTokenStore(redis_server.url, reload_interval=600)  # only events can be fast
        made.append(store)
        if started:
            assert await store.start(wait=10), "token store did not connect"
        return store

    yield make
    for store in made:
        await store.stop()


def stored_ids(server: RedisServer) -> set[str]:
    """The token ids in the Redis hash right now (a blocking client of the test's own)."""
    with redis.Redis(port=server.port, host="127.0.0.1", decode_responses=True) as client:
        return set(client.hkeys("lr:tokens"))


def restart_empty(processes: ProcessGroup, server: RedisServer) -> RedisServer:
    """Kill Redis and start a fresh one on the same port, without persistence: it comes back empty."""
    server.kill()
    fresh = start_redis(processes, server.port)
    assert stored_ids(fresh) == set()
    return fresh


class Watch:
    """Polls ``authenticate`` on every store every 20 ms while running; remembers every miss."""

    def __init__(self, stores: list[RedisTokenStore], tokens: list[str]) -> None:
        self.stores, self.tokens, self.misses = stores, tokens, []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            for index, store in enumerate(self.stores):
                for token in self.tokens:
                    if store.authenticate(token) is None:
                        self.misses.append((index, token[:8]))
            await asyncio.sleep(0.02)

    async def stop(self) -> list[tuple[int, str]]:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.misses


async def test_a_token_created_on_one_node_authenticates_on_another(stores) -> None:
    one, two = await stores(), await stores()

    token, record = one.create(label="laptop", subdomains=["app"])

    found = await eventually(lambda: two.authenticate(token), 10, "token known on node two")
    assert found.id == record.id and found.label == "laptop" and found.names == ["app"]
    assert two.reserved_by("app").id == record.id
    assert two.authenticate(token + "x") is None
    assert one.authenticate(token).id == record.id


async def test_redis_holds_only_the_hash_of_a_token(stores, redis_server) -> None:
    one = await stores()
    token, record = one.create(label="x")

    with redis.Redis(port=redis_server.port, host="127.0.0.1", decode_responses=True) as client:
        stored = client.hgetall("lr:tokens")
    assert list(stored) == [record.id]
    assert token not in stored[record.id] and record.hash in stored[record.id]


async def test_a_revocation_reaches_every_node_and_calls_its_hook(stores) -> None:
    one, two = await stores(), await stores()
    token, record = one.create()
    await eventually(lambda: two.authenticate(token), 10, "token known on node two")
    changed: list[bool] = []
    two.on_change.append(lambda: changed.append(two.get(record.id) is None))

    assert one.revoke(record.id) is True

    await eventually(lambda: two.authenticate(token) is None, 10, "revocation seen on node two")
    assert changed and changed[-1] is True
    assert one.revoke(record.id) is False


async def test_the_cli_mode_reads_and_writes_redis_directly(stores) -> None:
    node = await stores()
    cli = await stores(started=False)

    token, record = cli.create(label="from the cli")
    assert [r.id for r in cli.records()] == [record.id]
    await eventually(lambda: node.authenticate(token), 10, "cli token known on the node")
    assert cli.revoke(record.id) is True
    assert cli.records() == []


async def test_an_expired_token_no_longer_authenticates(stores) -> None:
    one, two = await stores(), await stores()
    token, record = one.create(expires=time.time() + 1.0)
    assert (await eventually(lambda: two.authenticate(token), 10)).id == record.id

    await eventually(lambda: two.authenticate(token) is None, 10, "expiry honoured")
    assert two.find(token).expired()


async def test_admin_tokens_open_the_admin_endpoints_only(stores) -> None:
    one, two = await stores(), await stores()
    token, _ = one.create(admin=True)

    assert (await eventually(lambda: two.authenticate_admin(token), 10)).is_admin
    assert two.authenticate(token) is None


async def test_a_name_reserved_by_one_token_cannot_be_reserved_by_another_from_any_node(stores) -> None:
    one, two = await stores(), await stores()
    one.create(subdomains=["app", "api"])

    with pytest.raises(TokenStoreError, match="'api' is already reserved"):
        two.create(subdomains=["api"])  # node two may not have heard of it yet: Redis checks

    await eventually(lambda: len(two.records()) == 1, 10, "node two sees one token")
    assert all(r.names == ["app", "api"] for r in two.records())


async def test_with_redis_down_tokens_still_authenticate_from_the_mirror(stores, redis_server) -> None:
    one, two = await stores(), await stores()
    token, record = one.create()
    await eventually(lambda: two.authenticate(token), 10, "token known on node two")

    redis_server.kill()

    await eventually(lambda: two.degraded, 15, "store degraded")
    assert two.authenticate(token).id == record.id
    with pytest.raises(TokenStoreError, match="cannot write tokens to the fleet's Redis"):
        one.create(label="while down")
    assert [r.id for r in one.records()] == [record.id]  # the refused create left nothing behind


async def test_the_cli_mode_says_clearly_when_redis_is_unreachable(stores, redis_server) -> None:
    cli = await stores(started=False)
    redis_server.kill()

    with pytest.raises(TokenStoreError, match=r"cannot read tokens from the fleet's Redis redis://127\.0\.0\.1"):
        cli.records()


# ------------------------------------------------------------------ Redis restarted without persistence


async def test_a_redis_restarted_empty_gets_the_tokens_back_from_the_nodes_and_no_mirror_loses_one(
    stores, redis_server, processes: ProcessGroup
) -> None:
    nodes = [await stores(), await stores(), await stores()]
    first, a = nodes[0].create(label="a")
    second, b = nodes[1].create(label="b", subdomains=["reserved"])
    for node in nodes:
        await eventually(lambda: node.authenticate(first) and node.authenticate(second), 10, "both tokens everywhere")
    sweeps: list[int] = []
    for node in nodes:
        node.on_change.append(lambda node=node: sweeps.append(len(node.records())))
    watch = Watch(nodes, [first, second])

    server = restart_empty(processes, redis_server)

    await eventually(lambda: stored_ids(server) == {a.id, b.id}, 15, "records written back into the empty Redis")
    await eventually(lambda: all(n.epoch and not n.degraded for n in nodes), 15, "every node on the new epoch")
    await asyncio.sleep(1.0)  # a few more reload rounds on every node
    assert await watch.stop() == []  # no node ever answered "unknown token" across the restart
    assert all(count == 2 for count in sweeps), sweeps  # no mirror ever held fewer than both
    assert len({n.epoch for n in nodes}) == 1
    assert sum(n.restored for n in nodes) >= 2
    for node in nodes:
        assert node.authenticate(first).id == a.id and node.authenticate(second).id == b.id
        assert node.reserved_by("reserved").id == b.id
    with pytest.raises(TokenStoreError, match="'reserved' is already reserved"):
        nodes[2].create(subdomains=["reserved"])  # the restored reservation is enforced by Redis again

    # New tokens and revocations work as before; a revoke disconnects at once and is not undone.
    third, c = nodes[2].create(label="c")
    await eventually(lambda: nodes[0].authenticate(third), 10, "a token made after the restart")
    revoked_seen: list[bool] = []
    nodes[1].on_change.append(lambda: revoked_seen.append(nodes[1].get(a.id) is None))
    assert nodes[0].revoke(a.id) is True
    for node in nodes:
        await eventually(lambda: node.authenticate(first) is None, 10, "revocation after the restart seen")
    assert revoked_seen and revoked_seen[-1] is True
    await asyncio.sleep(1.0)
    assert stored_ids(server) == {b.id, c.id}
    assert all(n.authenticate(first) is None and n.authenticate(second) for n in nodes)


async def test_a_node_writing_back_late_never_brings_back_a_token_revoked_since(stores, redis_server, processes) -> None:
    early, late = await stores(), await stores()
    kept_token, kept = early.create(label="kept")
    doomed_token, doomed = early.create(label="doomed")
    await eventually(lambda: late.authenticate(kept_token) and late.authenticate(doomed_token), 10, "both on late")
    await late.stop()  # late is away while Redis restarts and the fleet moves on
    old_epoch = late.epoch

    server = restart_empty(processes, redis_server)
    await eventually(lambda: stored_ids(server) == {kept.id, doomed.id}, 15, "early wrote its records back")
    cli = await stores(started=False)
    assert cli.revoke(doomed.id) is True

    # late comes back with its old copy (both tokens) and the old epoch: it writes back, but not the revoked one.
    back = await stores(started=False)
    back.epoch, back._stored = old_epoch, dict(late._stored)
    back._apply(back._stored, force=True)
    assert await back.start(wait=10)
    assert back.epoch == early.epoch != old_epoch
    assert back.authenticate(kept_token).id == kept.id
    assert back.authenticate(doomed_token) is None
    assert stored_ids(server) == {kept.id}


async def test_a_node_starting_fresh_on_an_empty_redis_writes_nothing_back(stores, redis_server, processes) -> None:
    node = await stores()
    node.create(label="before")
    await node.stop()
    server = restart_empty(processes, redis_server)

    fresh = await stores()  # no copy of its own: it only sets the new epoch

    assert fresh.epoch and fresh.restored == 0 and fresh.records() == []
    assert stored_ids(server) == set()
