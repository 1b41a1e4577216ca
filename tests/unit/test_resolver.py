"""*.localhost resolves to loopback without asking the system (relay_client/resolver.py)."""

from __future__ import annotations

import socket

import pytest

from relay_client.resolver import LoopbackResolver, is_localhost


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "app.localhost", "a.b.localhost", "App.LocalHost."])
def test_localhost_and_names_under_it_are_local(host):
    assert is_localhost(host)


@pytest.mark.parametrize("host", ["", "notlocalhost", "localhost.example.com", "localhostx", "127.0.0.1", "example.com"])
def test_other_names_are_not_local(host):
    assert not is_localhost(host)


class RecordingResolver:
    def __init__(self):
        self.calls = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.calls.append((host, port, family))
        return ["system answer"]

    async def close(self):
        self.calls.append("closed")


@pytest.fixture
async def resolver():
    r = LoopbackResolver()
    await r._default.close()
    r._default = RecordingResolver()  # never touch real DNS in unit tests
    yield r


async def test_name_under_localhost_resolves_to_both_loopbacks_ipv4_first(resolver):
    results = await resolver.resolve("app.localhost", 8080, socket.AF_UNSPEC)
    assert [(r["host"], r["port"], r["family"]) for r in results] == [
        ("127.0.0.1", 8080, socket.AF_INET),
        ("::1", 8080, socket.AF_INET6),
    ]
    assert all(r["hostname"] == "app.localhost" and r["flags"] == socket.AI_NUMERICHOST for r in results)
    assert resolver._default.calls == []


async def test_address_family_restricts_the_answer(resolver):
    v4 = await resolver.resolve("x.localhost", 80, socket.AF_INET)
    v6 = await resolver.resolve("x.localhost", 80, socket.AF_INET6)
    assert [r["host"] for r in v4] == ["127.0.0.1"]
    assert [r["host"] for r in v6] == ["::1"]


async def test_default_family_is_ipv4(resolver):
    assert [r["host"] for r in await resolver.resolve("localhost")] == ["127.0.0.1"]


async def test_other_names_go_to_the_system_resolver(resolver):
    assert await resolver.resolve("example.com", 443, socket.AF_UNSPEC) == ["system answer"]
    assert resolver._default.calls == [("example.com", 443, socket.AF_UNSPEC)]


async def test_close_closes_the_delegate(resolver):
    await resolver.close()
    assert resolver._default.calls == ["closed"]
