"""A pytest fixture that gives a test a public URL for a local app.

    def test_registration(public_tunnel, my_local_app):
        tunnel = public_tunnel("http://127.0.0.1:5003")
        assert requests.get(tunnel.public_url + "/.well-known/ai-plugin.json").ok

The relay is ``--relay-server`` (or ``RELAY_SERVER``), default
``http://localhost:8080``; the token is ``--relay-token`` (or ``RELAY_TOKEN``).
Every tunnel a test opens is closed when the test ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from relay_client.api import Tunnel


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options naming the relay the fixture connects to."""
    group = parser.getgroup("localrelay")
    group.addoption("--relay-server", default=None, help="relay URL for the public_tunnel fixture")
    group.addoption("--relay-token", default=None, help="agent token for the public_tunnel fixture")


@pytest.fixture
def public_tunnel(request: pytest.FixtureRequest) -> Iterator[Callable[..., Tunnel]]:
    """Factory: ``public_tunnel(local_url, **options)`` -> an open blocking ``Tunnel``."""
    server = request.config.getoption("--relay-server") or os.environ.get("RELAY_SERVER", "http://localhost:8080")
    token = request.config.getoption("--relay-token") or os.environ.get("RELAY_TOKEN")
    opened: list[Tunnel] = []

    def open_tunnel(local: str, **options: object) -> Tunnel:
        options.setdefault("server", server)
        options.setdefault("token", token)
        tunnel = Tunnel(local, **options)  # type: ignore[arg-type]
        tunnel.start()
        opened.append(tunnel)
        return tunnel

    yield open_tunnel
    for tunnel in reversed(opened):
        tunnel.stop()
