"""Name -> live tunnel (relay_server/registry.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from relay_server.registry import LocalRegistry, NameTaken, Owner


@dataclass(eq=False)
class FakeTunnel:
    name: str
    owner: Owner
    evictions: list[str] = field(default_factory=list)
    accepting: bool = True
    said_goodbye: bool = False

    def evict(self, reason: str) -> None:
        self.evictions.append(reason)


ALICE = Owner("tok_alice", "agent-1")


async def test_claim_registers_and_lookup_finds_the_tunnel():
    registry = LocalRegistry()
    tunnel = FakeTunnel("app", ALICE)
    await registry.claim(tunnel)
    assert registry.lookup("app") is tunnel
    assert registry.lookup("other") is None
    assert len(registry) == 1 and list(registry) == [tunnel]


async def test_same_owner_reconnecting_replaces_and_evicts_the_old_tunnel():
    registry = LocalRegistry()
    old, new = FakeTunnel("app", ALICE), FakeTunnel("app", Owner("tok_alice", "agent-1"))
    await registry.claim(old)
    await registry.claim(new)
    assert registry.lookup("app") is new
    assert old.evictions == ["replaced by a new connection from the same agent"]
    assert new.evictions == []


@pytest.mark.parametrize("intruder", [Owner("tok_bob", "agent-1"), Owner("tok_alice", "agent-2"), Owner(None, "agent-1")])
async def test_another_owner_cannot_take_a_held_name(intruder):
    registry = LocalRegistry()
    held = FakeTunnel("app", ALICE)
    await registry.claim(held)
    with pytest.raises(NameTaken, match="'app'"):
        await registry.claim(FakeTunnel("app", intruder))
    assert registry.lookup("app") is held and held.evictions == []


async def test_claiming_twice_is_harmless():
    registry = LocalRegistry()
    tunnel = FakeTunnel("app", ALICE)
    await registry.claim(tunnel)
    await registry.claim(tunnel)
    assert tunnel.evictions == [] and len(registry) == 1


async def test_release_of_a_replaced_tunnel_keeps_the_new_one():
    registry = LocalRegistry()
    old, new = FakeTunnel("app", ALICE), FakeTunnel("app", ALICE)
    await registry.claim(old)
    await registry.claim(new)
    await registry.release(old)
    assert registry.lookup("app") is new
    await registry.release(new)
    assert registry.lookup("app") is None and len(registry) == 0


async def test_release_of_an_unknown_tunnel_does_nothing():
    registry = LocalRegistry()
    await registry.release(FakeTunnel("ghost", ALICE))
    assert len(registry) == 0


async def test_iteration_is_a_snapshot_safe_against_release():
    registry = LocalRegistry()
    tunnels = [FakeTunnel(f"t{i}", ALICE) for i in range(3)]
    for tunnel in tunnels:
        await registry.claim(tunnel)
    for tunnel in registry:
        await registry.release(tunnel)
    assert len(registry) == 0
