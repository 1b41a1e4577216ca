"""The name grace period: a vanished agent's name waits ``name_grace`` seconds for its own token.

First the registry alone (a fake clock, fake tunnels), then real processes: an
agent killed without a goodbye keeps its name for its token; another token is
refused during the grace and gets the name after it; an agent that exits
cleanly frees its name at once.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

import pytest

from relay_server.registry import LocalRegistry, NameTaken, Owner
from support.localrelay import get_direct, run_refused_agent, wait_until

from .conftest import create_token_in, start_agent_with, start_relay_with

CEILING = 30.0


# ---------------------------------------------------------------- the registry


@dataclass(eq=False)
class FakeTunnel:
    name: str
    owner: Owner
    accepting: bool = True
    said_goodbye: bool = False
    evictions: list[str] = field(default_factory=list)

    def evict(self, reason: str) -> None:
        self.evictions.append(reason)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ALICE_1 = Owner("tok_alice", "agent-1")
ALICE_2 = Owner("tok_alice", "agent-2")
BOB = Owner("tok_bob", "agent-9")


async def _lost(registry: LocalRegistry, owner: Owner = ALICE_1) -> FakeTunnel:
    tunnel = FakeTunnel("app", owner)
    await registry.claim(tunnel)
    tunnel.accepting = False  # the connection died without a goodbye
    await registry.release(tunnel)
    return tunnel


async def test_a_lost_name_answers_no_lookup_and_goes_to_no_other_token_during_the_grace():
    clock = Clock()
    registry = LocalRegistry(name_grace=10, clock=clock)
    await _lost(registry)
    assert registry.lookup("app") is None and registry.held("app") and len(registry) == 0
    clock.now += 9
    with pytest.raises(NameTaken, match="held for its previous agent.*free in 1 s"):
        await registry.claim(FakeTunnel("app", BOB))


@pytest.mark.parametrize("comeback", [ALICE_1, ALICE_2], ids=["same agent", "another agent of the same token"])
async def test_the_same_token_reclaims_a_lost_name_during_the_grace(comeback):
    registry = LocalRegistry(name_grace=10, clock=Clock())
    await _lost(registry)
    back = FakeTunnel("app", comeback)
    await registry.claim(back)
    assert registry.lookup("app") is back and not registry.held("app")


async def test_another_token_gets_the_name_once_the_grace_is_over():
    clock = Clock()
    registry = LocalRegistry(name_grace=10, clock=clock)
    await _lost(registry)
    clock.now += 10
    bob = FakeTunnel("app", BOB)
    await registry.claim(bob)
    assert registry.lookup("app") is bob


async def test_a_goodbye_frees_the_name_at_once():
    registry = LocalRegistry(name_grace=10, clock=Clock())
    tunnel = FakeTunnel("app", ALICE_1)
    await registry.claim(tunnel)
    tunnel.accepting, tunnel.said_goodbye = False, True
    await registry.release(tunnel)
    assert not registry.held("app")
    await registry.claim(FakeTunnel("app", BOB))


async def test_a_leaving_agent_still_finishing_requests_gives_its_name_to_anyone_without_eviction():
    registry = LocalRegistry(name_grace=10, clock=Clock())
    leaving = FakeTunnel("app", ALICE_1)
    await registry.claim(leaving)
    leaving.accepting, leaving.said_goodbye = False, True  # GOAWAY(NO_ERROR) from the agent
    assert registry.lookup("app") is None
    bob = FakeTunnel("app", BOB)
    await registry.claim(bob)
    assert registry.lookup("app") is bob and leaving.evictions == []
    await registry.release(leaving)  # its connection ends later: bob keeps the name
    assert registry.lookup("app") is bob


async def test_a_connection_lost_but_not_yet_released_is_already_under_the_grace():
    registry = LocalRegistry(name_grace=10, clock=Clock())
    dying = FakeTunnel("app", ALICE_1)
    await registry.claim(dying)
    dying.accepting = False
    with pytest.raises(NameTaken):
        await registry.claim(FakeTunnel("app", BOB))
    await registry.claim(FakeTunnel("app", ALICE_2))


async def test_on_an_open_relay_only_the_same_agent_reclaims_a_lost_name():
    registry = LocalRegistry(name_grace=10, clock=Clock())
    await _lost(registry, Owner(None, "agent-1"))
    with pytest.raises(NameTaken):
        await registry.claim(FakeTunnel("app", Owner(None, "agent-2")))
    await registry.claim(FakeTunnel("app", Owner(None, "agent-1")))


async def test_a_zero_grace_frees_lost_names_at_once():
    registry = LocalRegistry(name_grace=0, clock=Clock())
    await _lost(registry)
    await registry.claim(FakeTunnel("app", BOB))


async def test_expired_holds_are_forgotten():
    clock = Clock()
    registry = LocalRegistry(name_grace=5, clock=clock)
    for i in range(50):
        tunnel = FakeTunnel(f"n{i}", ALICE_1)
        await registry.claim(tunnel)
        tunnel.accepting = False
        await registry.release(tunnel)
    clock.now += 5
    await _lost(registry)
    assert len(registry._held) == 1  # white-box: the table does not grow with history


# ---------------------------------------------------------------- real processes


def _offline_at_once(relay_port: int, host: str) -> bool:
    """Whether ``host`` answers 502; once it does, asserts the 502 comes at once (no hang)."""
    if get_direct(relay_port, "/", host, 10.0)[0] != 502:
        return False
    started = time.monotonic()
    status, body = get_direct(relay_port, "/", host, 10.0)
    assert status == 502 and b"offline" in body.lower(), body[:300]
    assert time.monotonic() - started < 5, "a request to a name in its grace must not hang"
    return True


def test_a_killed_agents_name_is_refused_to_another_token_and_reclaimed_by_its_own(processes, data_dir, origin):
    mine, theirs = create_token_in(data_dir), create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, extra=("--name-grace", "60"))
    agent = start_agent_with(processes, relay.port, str(origin.port), mine, "keepme")
    agent.process.kill()  # no goodbye
    wait_until(lambda: _offline_at_once(relay.port, agent.host), CEILING, message="502 tunnel offline")

    code, error, _ = run_refused_agent(processes, relay.port, str(origin.port), theirs, "keepme")
    assert code == 4, error
    assert "keepme" in error and "held" in error

    back = start_agent_with(processes, relay.port, str(origin.port), mine, "keepme")  # a new process: a new agent key
    assert back.public_url == agent.public_url
    assert get_direct(relay.port, "/", back.host, 10.0)[0] == 200


def test_another_token_gets_a_killed_agents_name_after_the_grace(processes, data_dir, origin):
    grace = 2.0
    mine, theirs = create_token_in(data_dir), create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, extra=("--name-grace", str(grace)))
    agent = start_agent_with(processes, relay.port, str(origin.port), mine, "handover")
    agent.process.kill()
    wait_until(lambda: _offline_at_once(relay.port, agent.host), CEILING, message="502 tunnel offline")
    time.sleep(grace + 0.5)
    other = start_agent_with(processes, relay.port, str(origin.port), theirs, "handover")
    assert other.public_url == agent.public_url


def test_a_clean_agent_exit_frees_its_name_at_once(processes, data_dir, origin):
    mine, theirs = create_token_in(data_dir), create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, extra=("--name-grace", "60"))
    agent = start_agent_with(processes, relay.port, str(origin.port), mine, "freed")
    agent.process.signal(signal.SIGTERM)
    assert agent.process.wait_exit(CEILING) == 0
    other = start_agent_with(processes, relay.port, str(origin.port), theirs, "freed")
    assert other.public_url == agent.public_url
    assert get_direct(relay.port, "/", other.host, 10.0)[0] == 200
