"""What a public request looks like at the origin, and what its answer looks like to the caller."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

import aiohttp
import pytest

from support.clients import build_request, raw_request, read_response
from support.localrelay import Agent, Relay
from support.payloads import GZIP_TEXT, payload
from support.ports import LOOPBACK


def _headers_named(info: dict, name: str) -> list[str]:
    """Values of header ``name`` as the origin saw them, in order."""
    return [v for k, v in info["headers"] if k.lower() == name.lower()]


async def _describe(relay: Relay, agent: Agent, target: str, headers: list[tuple[str, str]] = (), body: bytes = b"") -> dict:
    """Send a raw request through the tunnel to the origin's describe endpoint; its JSON."""
    response = await raw_request(relay.port, build_request("POST" if body else "GET", target, agent.host, list(headers), body))
    assert response.status == 200, (response.status, response.reason, response.body[:500])
    return json.loads(response.body)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "PROPFIND", "REPORT"])
async def test_every_method_reaches_the_origin_with_its_body_and_the_answer_comes_back_exact(
    method: str, agent: Agent, client: aiohttp.ClientSession
) -> None:
    body = b"" if method == "GET" else method.encode() + b"\x00\xff\r\n" + payload(len(method), 70_000)
    async with client.request(method, f"{agent.public_url}/_o/mirror?method={method}", data=body or None) as response:
        received = await response.read()
        assert response.status == 200, (response.status, response.reason, received[:300])
        assert response.headers["X-Origin-Method"] == method
        assert response.headers["Content-Length"] == str(len(body))
        assert bytes.fromhex(response.headers["X-Origin-Raw-Path"]) == f"/_o/mirror?method={method}".encode()
    assert received == body


async def test_a_method_the_http_parser_does_not_know_gets_400_and_the_tunnel_keeps_working(
    agent: Agent, client: aiohttp.ClientSession
) -> None:
    # Documented limit (README): the relay's C HTTP parser (llhttp) knows the ~40
    # registered methods (incl. WebDAV, PURGE); an unregistered token is refused
    # at the parser, before routing, and never reaches the local server.
    async with client.request("FROBNICATE", f"{agent.public_url}/_o/mirror") as response:
        assert response.status == 400
        assert "method" in (await response.text()).lower()
    async with client.get(f"{agent.public_url}/_o/mirror?method=GET") as response:
        assert response.status == 200


async def test_head_answers_with_the_get_headers_including_content_length_and_no_body(relay: Relay, agent: Agent) -> None:
    get = await raw_request(relay.port, build_request("GET", "/_o/bytes?n=1234", agent.host))
    assert get.status == 200 and get.body == payload(7, 1234)

    head = await raw_request(relay.port, build_request("HEAD", "/_o/bytes?n=1234", agent.host), head_request=True, until_eof=True)
    assert head.status == 200
    assert head.get("X-Origin-Method") == "HEAD"
    assert head.get("Content-Length") == "1234"
    assert head.get("ETag") == get.get("ETag") == '"bytes-1234"'
    assert head.get("Content-Type") == get.get("Content-Type")
    assert head.trailing == b""


@pytest.mark.parametrize(("code", "reason"), [(204, "No Content"), (304, "Not Modified")])
async def test_bodyless_statuses_come_back_with_their_headers_and_no_body(code: int, reason: str, relay: Relay, agent: Agent) -> None:
    target = f"/_o/status?code={code}&reason={reason.replace(' ', '%20')}"
    response = await raw_request(relay.port, build_request("GET", target, agent.host), until_eof=True)
    assert (response.status, response.reason) == (code, reason)
    assert response.get("ETag") == '"v1"'
    assert response.body == b"" and response.trailing == b""
    if code == 204:
        assert response.get("Content-Length") is None
        assert response.get("Transfer-Encoding") is None


async def test_an_empty_post_arrives_with_content_length_zero(relay: Relay, agent: Agent) -> None:
    request = build_request("POST", "/empty-post", agent.host, [("Content-Length", "0")])
    response = await raw_request(relay.port, request)
    assert response.status == 200
    info = json.loads(response.body)
    assert info["method"] == "POST"
    assert _headers_named(info, "Content-Length") == ["0"]
    assert info["body_length"] == 0


async def test_an_http_1_0_caller_gets_a_complete_response(relay: Relay, agent: Agent) -> None:
    request = f"GET /http-1.0?x=1 HTTP/1.0\r\nHost: {agent.host}\r\n\r\n".encode()
    response = await raw_request(relay.port, request, until_eof=True)
    assert response.status == 200
    info = json.loads(response.body)
    assert info["raw_path"] == "/http-1.0?x=1"
    assert _headers_named(info, "X-Forwarded-Host") == [agent.host]
    assert response.trailing == b""


async def test_request_headers_arrive_at_the_origin_with_repeated_ones_in_order(relay: Relay, agent: Agent) -> None:
    sent = [
        ("X-Multi", "one"),
        ("Authorization", "Bearer origin-secret"),
        ("X-Multi", "two"),
        ("Cookie", "a=1; b=2"),
        ("X-Multi", "three"),
        ("User-Agent", "e2e-suite/1.0"),
        ("X-Empty", ""),
    ]
    info = await _describe(relay, agent, "/headers", sent)
    assert _headers_named(info, "X-Multi") == ["one", "two", "three"]
    assert _headers_named(info, "Authorization") == ["Bearer origin-secret"]
    assert _headers_named(info, "Cookie") == ["a=1; b=2"]
    assert _headers_named(info, "User-Agent") == ["e2e-suite/1.0"]
    assert _headers_named(info, "X-Empty") == [""]
    assert _headers_named(info, "Host") == [agent.host]


async def test_three_set_cookie_headers_arrive_as_three_separate_headers(relay: Relay, agent: Agent) -> None:
    response = await raw_request(relay.port, build_request("GET", "/_o/cookies", agent.host))
    assert response.status == 200
    assert response.get_all("Set-Cookie") == [
        "first=1; Path=/",
        "second=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly",
        "third=3; Path=/x; SameSite=Lax",
    ]


@pytest.mark.parametrize(
    ("code", "reason"), [(299, "Custom Reason"), (418, "Short And Stout"), (503, "Back In Five"), (201, "Made It")]
)
async def test_status_code_and_reason_phrase_are_preserved(code: int, reason: str, relay: Relay, agent: Agent) -> None:
    target = f"/_o/status?code={code}&reason={reason.replace(' ', '%20')}"
    response = await raw_request(relay.port, build_request("GET", target, agent.host))
    assert (response.status, response.reason) == (code, reason)
    assert response.body == f"status {code}".encode()
    assert response.get("X-Relay-Error") is None


async def test_hop_by_hop_request_headers_are_not_forwarded(relay: Relay, agent: Agent) -> None:
    sent = [
        ("Connection", "keep-alive, X-Conn-Named"),
        ("X-Conn-Named", "connection-scoped"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Kept", "end-to-end"),
    ]
    info = await _describe(relay, agent, "/hop-by-hop", sent)
    names = {k.lower() for k, _ in info["headers"]}
    for dropped in ("x-conn-named", "keep-alive", "te", "proxy-authorization", "proxy-connection"):
        assert dropped not in names, f"{dropped} reached the origin: {info['headers']}"
    assert all("x-conn-named" not in v.lower() for v in _headers_named(info, "Connection"))
    assert _headers_named(info, "X-Kept") == ["end-to-end"]


async def test_hop_by_hop_response_headers_are_not_passed_to_the_caller(relay: Relay, agent: Agent) -> None:
    response = await raw_request(relay.port, build_request("GET", "/_o/hop-response", agent.host))
    assert response.status == 200 and response.body == b"hop"
    assert response.get("X-Resp-Hop") is None
    assert response.get("Keep-Alive") is None
    assert response.get("Proxy-Authenticate") is None
    assert all("x-resp-hop" not in v.lower() for v in response.get_all("Connection"))
    assert response.get("X-Resp-Kept") == "kept"


async def test_x_forwarded_headers_are_set_by_the_relay_and_spoofed_ones_are_replaced(relay: Relay, agent: Agent) -> None:
    spoofed = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ]
    info = await _describe(relay, agent, "/forwarded", spoofed)
    assert _headers_named(info, "X-Forwarded-For") == ["127.0.0.1"]
    assert _headers_named(info, "X-Forwarded-Proto") == ["http"]
    assert _headers_named(info, "X-Forwarded-Host") == [agent.host]


async def test_x_forwarded_headers_are_set_when_the_caller_sends_none(relay: Relay, agent: Agent) -> None:
    info = await _describe(relay, agent, "/forwarded-plain")
    assert _headers_named(info, "X-Forwarded-For") == ["127.0.0.1"]
    assert _headers_named(info, "X-Forwarded-Proto") == ["http"]
    assert _headers_named(info, "X-Forwarded-Host") == [agent.host]


@pytest.mark.parametrize(
    "target",
    [
        "/caf%C3%A9/%2F%20x?q=a%20b&q=%E2%9C%93&empty=&plus=a+b",
        "/a%2Fb/%252F/%7Euser/~tilde?x=%26&y=%3D&z=%23not-a-fragment",
        "/lower%c3%a9/UPPER%C3%A9?k=%e2%9c%93",
        "//double//slashes///kept",
        "/dots/../and/./segments/kept",
        "/semi;colon=1/p;q?a=1;b=2&c",
        "/?%E2%9C%93",
        "/q?a=1&a=2&a=3&=&&",
    ],
)
async def test_unicode_and_percent_encoded_paths_and_queries_arrive_byte_exact(target: str, relay: Relay, agent: Agent) -> None:
    info = await _describe(relay, agent, target)
    assert info["raw_path"] == target
    assert info["method"] == "GET"


async def test_an_expect_100_continue_upload_gets_100_continue_and_arrives_intact(relay: Relay, agent: Agent) -> None:
    body = payload(11, 300_000)
    head = build_request(
        "PUT", "/_o/upload", agent.host, [("Expect", "100-continue"), ("Content-Length", str(len(body)))]
    )
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(head)  # headers only: the body waits for 100 Continue, as curl does
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status_line.startswith(b"HTTP/1.1 100"), status_line
        writer.write(body)
        await writer.drain()
        response = await read_response(reader)
    finally:
        writer.close()
    assert response.status == 200, response.body[:500]
    info = json.loads(response.body)
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert info["length"] == len(body)
    assert info["method"] == "PUT"


async def test_a_gzip_response_arrives_byte_identical_and_still_compressed(agent: Agent, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{agent.public_url}/_o/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(body))
        expected_sha = response.headers["X-Origin-Sha256"]
    assert hashlib.sha256(body).hexdigest() == expected_sha
    assert gzip.decompress(body) == GZIP_TEXT
