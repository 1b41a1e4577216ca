"""Host header -> tunnel name (relay_server.app.tunnel_name)."""

from __future__ import annotations

import pytest

from relay_server.app import tunnel_name


@pytest.mark.parametrize(
    "host, name",
    [
        ("app.example.com", "app"),
        ("app.example.com:8080", "app"),
        ("app.example.com:443", "app"),
        ("APP.Example.COM", "app"),
        ("app.example.com.", "app"),
        ("app.example.com.:8080", "app"),
        ("  app.example.com  ", "app"),
        ("my-app-2.example.com", "my-app-2"),
    ],
)
def test_name_dot_domain_names_the_tunnel_with_any_port_case_or_trailing_dot(host, name):
    assert tunnel_name(host, "example.com") == name


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "example.com:8080",
        "example.com.",
        "EXAMPLE.COM",
        ".example.com",
        "",
        "127.0.0.1",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::1]:443",
        "::1",
        "evil-example.com",
        "app.example.com.evil.net",
        "app.example.org",
        "localhost:8080",
    ],
)
def test_the_relays_own_hosts_and_foreign_hosts_name_no_tunnel(host):
    assert tunnel_name(host, "example.com") is None


def test_nested_labels_name_no_tunnel_so_the_relay_answers_itself():
    # Names are one DNS label; a.b.example.com can never be a tunnel.
    assert tunnel_name("a.b.example.com", "example.com") is None
    assert tunnel_name("www.app.example.com:8080", "example.com") is None


def test_localhost_domain_routes_name_dot_localhost():
    assert tunnel_name("app.localhost:8080", "localhost") == "app"
    assert tunnel_name("localhost:8080", "localhost") is None
    assert tunnel_name("127.0.0.1:8080", "localhost") is None


def test_domain_with_a_port_in_the_host_header_only():
    assert tunnel_name("app.relay.example.com:8443", "relay.example.com") == "app"
    assert tunnel_name("relay.example.com:8443", "relay.example.com") is None
