"""--server URL -> websocket URL (relay_client/connection.py)."""

from __future__ import annotations

import pytest

from relay_client.connection import CONNECT_PATH, websocket_url
from relay_client.errors import FatalError


@pytest.mark.parametrize(
    "server, url",
    [
        ("http://relay.example.com", "ws://relay.example.com/_relay/connect"),
        ("https://relay.example.com", "wss://relay.example.com/_relay/connect"),
        ("https://relay.example.com:8443/", "wss://relay.example.com:8443/_relay/connect"),
        ("https://example.com/tunnel/", "wss://example.com/tunnel/_relay/connect"),
        ("relay.example.com:8080", "ws://relay.example.com:8080/_relay/connect"),
        ("localhost:8080", "ws://localhost:8080/_relay/connect"),
        ("ws://relay:80", "ws://relay:80/_relay/connect"),
        ("wss://relay", "wss://relay/_relay/connect"),
        ("http://relay/?q=1#f", "ws://relay/_relay/connect"),
        ("http://[::1]:8080", "ws://[::1]:8080/_relay/connect"),
    ],
)
def test_server_urls_map_to_the_connect_endpoint(server, url):
    assert websocket_url(server) == url
    assert url.endswith(CONNECT_PATH)


@pytest.mark.parametrize("server", ["ftp://relay", "http://", "https://:443"])
def test_non_http_servers_are_a_fatal_error(server):
    with pytest.raises(FatalError, match="not an http:// or https:// URL"):
        websocket_url(server)
