"""URL questions without sockets: which mode a URL means, which hosts only this machine reaches, bad targets."""

from __future__ import annotations

import pytest

from relay_client.check.runner import mode_for
from relay_client.check.urls import UrlError, is_absolute_http, is_machine_local, origin, parse_target, with_origin


@pytest.mark.parametrize(
    ("url", "mcp", "mode"),
    [
        ("https://todo.example.com", False, "plugin"),
        ("https://todo.example.com/", False, "plugin"),
        ("https://todo.example.com/.well-known/ai-plugin.json", False, "plugin"),
        ("https://todo.example.com/openapi.yaml", False, "action"),
        ("https://todo.example.com/mcp", True, "mcp"),
    ],
)
def test_the_url_and_mcp_flag_pick_the_mode(url: str, mcp: bool, mode: str) -> None:
    assert mode_for(url, mcp) == mode


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.0.10", True),
        ("fd00::1", True),
        ("0.0.0.0", True),
        ("todo.localhost", False),  # the relay's public name during development
        ("todo.example.com", False),
        ("::ffff:127.0.0.1", True),
        ("93.184.216.34", False),
    ],
)
def test_machine_local_hosts(host: str, local: bool) -> None:
    assert is_machine_local(host) is local


def test_origins_drop_default_ports_and_keep_others() -> None:
    assert origin("HTTPS://Todo.Example.com:443/x?y") == "https://todo.example.com"
    assert origin("http://todo.localhost:8080/mcp") == "http://todo.localhost:8080"
    assert origin("http://[::1]:5003/") == "http://[::1]:5003"
    assert with_origin("http://localhost:5003/openapi.yaml?v=1", "https://todo.example.com") == "https://todo.example.com/openapi.yaml?v=1"


@pytest.mark.parametrize("url", ["/relative", "ftp://x/y", "http://", "http://h:99999/", "http://[::1", "https://:443/"])
def test_urls_that_are_not_absolute_http_are_told_apart(url: str) -> None:
    assert not is_absolute_http(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("todo.example.com", "is not a URL"),
        ("ftp://todo.example.com", "only http:// and https://"),
        ("http://", "has no host name"),
        ("http://h:port/", "has an invalid port"),
        ("http://[::1/", "is not a valid URL"),
    ],
)
def test_unusable_targets_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(UrlError, match=message):
        parse_target(url)
