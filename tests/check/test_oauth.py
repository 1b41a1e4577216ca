"""MCP authorization discovery without sockets: the 401 challenge and RFC 9728 metadata."""

from __future__ import annotations

from relay_client.check import oauth
from relay_client.check.report import Status

ENDPOINT = "https://mcp.example.com/mcp"


def test_challenges_are_parsed_with_quoted_and_escaped_params() -> None:
    scheme, params = oauth.parse_challenge('Bearer realm="a \\"b\\"", resource_metadata="https://x/m", scope=tools')
    assert scheme == "Bearer"
    assert params == {"realm": 'a "b"', "resource_metadata": "https://x/m", "scope": "tools"}


def test_a_challenge_with_resource_metadata_passes_and_hands_back_its_url() -> None:
    check, url = oauth.check_challenge('Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"', ENDPOINT)
    assert check.status is Status.PASS
    assert url == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"


def test_challenges_without_metadata_or_pointing_home_fail_with_the_header_to_send() -> None:
    check, _ = oauth.check_challenge(None, ENDPOINT)
    assert check.status is Status.FAIL
    assert check.fix == (
        'answer 401 with WWW-Authenticate: Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    )
    check, _ = oauth.check_challenge('Bearer realm="x"', ENDPOINT)
    assert check.message == "Bearer challenge without resource_metadata"
    check, url = oauth.check_challenge('Bearer resource_metadata="http://localhost:8000/.well-known/oauth-protected-resource"', ENDPOINT)
    assert check.status is Status.FAIL and "points at your machine" in check.message and "--rewrite-urls" in check.fix
    assert url == "http://localhost:8000/.well-known/oauth-protected-resource"


def test_well_known_urls_try_the_path_form_first() -> None:
    assert oauth.well_known_urls(ENDPOINT) == [
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
    ]
    assert oauth.well_known_urls("https://mcp.example.com/") == ["https://mcp.example.com/.well-known/oauth-protected-resource"]


def test_metadata_must_name_the_public_url_and_reachable_issuers() -> None:
    good = {"resource": ENDPOINT, "authorization_servers": ["https://auth.example.com"]}
    assert [c.status for c in oauth.check_metadata(good, "u", ENDPOINT)] == [Status.PASS] * 3
    origin_only = {"resource": "https://mcp.example.com/", "authorization_servers": ["https://auth.example.com"]}
    assert oauth.check_metadata(origin_only, "u", ENDPOINT)[1].status is Status.PASS
    local = {"resource": "http://localhost:8000/mcp", "authorization_servers": ["http://127.0.0.1:9000"]}
    checks = oauth.check_metadata(local, "u", ENDPOINT)
    assert [c.status for c in checks] == [Status.PASS, Status.FAIL, Status.FAIL]
    assert checks[1].message == f"resource is http://localhost:8000/mcp (your machine, which clients cannot reach), not the public URL {ENDPOINT}"
    assert oauth.check_metadata({"resource": ENDPOINT}, "u", ENDPOINT)[2].message == "authorization_servers is missing or empty"
