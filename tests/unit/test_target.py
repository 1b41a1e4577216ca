"""PORT_OR_URL -> the local origin (relay_client/target.py)."""

from __future__ import annotations

import pytest

from relay_client.target import LocalTarget, TargetError, parse_target


@pytest.mark.parametrize(
    "value, target",
    [
        ("5003", LocalTarget("http", "localhost", 5003)),
        (" 8080 ", LocalTarget("http", "localhost", 8080)),
        ("1", LocalTarget("http", "localhost", 1)),
        ("65535", LocalTarget("http", "localhost", 65535)),
        ("localhost:5003", LocalTarget("http", "localhost", 5003)),
        ("127.0.0.1:3000", LocalTarget("http", "127.0.0.1", 3000)),
        ("http://127.0.0.1:5003", LocalTarget("http", "127.0.0.1", 5003)),
        ("http://127.0.0.1:5003/", LocalTarget("http", "127.0.0.1", 5003)),
        ("https://dev.local", LocalTarget("https", "dev.local", 443)),
        ("http://dev.local", LocalTarget("http", "dev.local", 80)),
        ("HTTP://LocalHost:80", LocalTarget("http", "localhost", 80)),
        ("http://[::1]:8080", LocalTarget("http", "::1", 8080)),
    ],
)
def test_ports_host_port_pairs_and_origins_are_understood(value, target):
    assert parse_target(value) == target


@pytest.mark.parametrize("value", ["0", "65536", "99999"])
def test_bare_ports_out_of_range_are_refused(value):
    with pytest.raises(TargetError, match="between 1 and 65535"):
        parse_target(value)


@pytest.mark.parametrize(
    "value, message",
    [
        ("ftp://host:21", "only http:// and https://"),
        ("ws://host:80", "only http:// and https://"),
        ("http://host:80/path", "origin only"),
        ("http://host:80?x=1", "origin only"),
        ("http://host:80#frag", "origin only"),
        ("http://:8080", "no host"),
        ("http://host:port", "invalid port"),
        ("localhost:70000", "invalid port"),
    ],
)
def test_anything_but_an_http_origin_is_refused_with_a_reason(value, message):
    with pytest.raises(TargetError, match=message):
        parse_target(value)


def test_port_zero_is_refused_in_every_form():
    for value in ("0", "localhost:0", "http://127.0.0.1:0"):
        with pytest.raises(TargetError):
            parse_target(value)


def test_origin_brackets_ipv6_hosts():
    assert LocalTarget("http", "::1", 8080).origin == "http://[::1]:8080"
    assert LocalTarget("https", "localhost", 443).origin == "https://localhost:443"


def test_target_error_is_a_value_error():
    assert issubclass(TargetError, ValueError)


@pytest.mark.parametrize("value", ["\u00b2", "\u2460"])  # str.isdigit() is true for these, int() refuses them
def test_digit_like_characters_are_refused_with_target_error(value):
    with pytest.raises(TargetError):
        parse_target(value)
