"""The pytest plugin's ``public_tunnel`` fixture and the blocking ``Tunnel``, against a real relay."""

from __future__ import annotations

import urllib.request

import pytest

from support.localrelay import Origin, Relay
from support.ports import LOOPBACK


def _get(public_url: str, relay_port: int, path: str) -> bytes:
    host = public_url.removeprefix("http://")
    request = urllib.request.Request(f"http://{LOOPBACK}:{relay_port}{path}", headers={"Host": host})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def test_public_tunnel_fixture_gives_a_url_that_reaches_the_local_app(
    public_tunnel, relay: Relay, doc_origin: Origin  # type: ignore[no-untyped-def]
) -> None:
    tunnel = public_tunnel(f"http://127.0.0.1:{doc_origin.port}", server=f"http://localhost:{relay.port}")
    assert tunnel.connected
    assert _get(tunnel.public_url, relay.port, "/plain") == b"plain"


def test_blocking_tunnel_closes_its_name_when_the_block_ends(relay: Relay, doc_origin: Origin) -> None:
    import relay_client

    with relay_client.Tunnel(
        f"http://127.0.0.1:{doc_origin.port}", server=f"http://localhost:{relay.port}", subdomain="blocking"
    ) as tunnel:
        assert tunnel.public_url == f"http://blocking.localhost:{relay.port}"
        assert _get(tunnel.public_url, relay.port, "/plain") == b"plain"
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(f"http://blocking.localhost:{relay.port}", relay.port, "/plain")
    assert info.value.code == 502


def test_blocking_tunnel_raises_the_agent_error_when_the_relay_is_unreachable() -> None:
    import relay_client
    from relay_client.errors import RetryableError
    from support.ports import free_port

    with pytest.raises(RetryableError, match="cannot reach relay"):
        with relay_client.Tunnel("http://127.0.0.1:9", server=f"http://localhost:{free_port()}"):
            pass
