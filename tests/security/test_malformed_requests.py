"""A catalogue of malformed public requests sent over raw sockets.

Each is answered with a 4xx or a closed connection, never reaches the local
server in an ambiguous form, and the relay keeps serving normal requests
through a real tunnel afterwards.  Smuggling pairs carry a second request
hidden in the body; the local server must never see it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator

import pytest

from security.guarded_stack import origin_record, relay_still_serves, start_guard_origin, wait_for_record
from support.clients import RAW_READ_TIMEOUT, RawResponse, read_response
from support.localrelay import Agent, Origin, Relay, start_agent, start_relay
from support.ports import LOOPBACK
from support.processes import ProcessGroup

MAX_URL_BYTES = 1024
MAX_HEADER_BYTES = 4096


@pytest.fixture(scope="module")
def stack(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, Agent, Origin]]:
    """A relay with small URL/header limits and one agent (``malformed``) on the guard origin."""
    origin = start_guard_origin(module_processes)
    relay = start_relay(
        module_processes,
        tmp_path_factory.mktemp("malformed-relay"),
        extra=("--open", "--max-url-bytes", str(MAX_URL_BYTES), "--max-header-bytes", str(MAX_HEADER_BYTES)),
        expect_paste_line=False,
    )
    agent = start_agent(module_processes, relay, str(origin.port), None, subdomain="malformed")
    yield relay, agent, origin
    for process in (relay.process, agent.process, origin.process):
        assert process.returncode is None, f"a process died\n{process.output()}"
    assert "Traceback" not in relay.process.output(), "a malformed request logged a traceback\n" + relay.process.output()


async def _read_any_response(reader: asyncio.StreamReader) -> RawResponse:
    """One response of any HTTP version (an HTTP/0.9-style request gets an ``HTTP/0.9`` status line)."""
    status_line = (await asyncio.wait_for(reader.readuntil(b"\r\n"), RAW_READ_TIMEOUT)).decode("latin-1")
    match = re.match(r"^HTTP/\d\.\d (\d{3}) ?(.*)\r\n$", status_line)
    assert match, f"not a status line: {status_line!r}"
    headers = []
    while (line := await asyncio.wait_for(reader.readuntil(b"\r\n"), RAW_READ_TIMEOUT)) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name, value.strip()))
    response = RawResponse(int(match.group(1)), match.group(2), headers)
    if (length := response.get("Content-Length")) is not None:
        response.body = await asyncio.wait_for(reader.readexactly(int(length)), RAW_READ_TIMEOUT)
    return response


async def _exchange(port: int, data: bytes) -> RawResponse | None:
    """Send ``data`` on a fresh connection; the first response, or None if the relay just closed."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), RAW_READ_TIMEOUT)
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass  # refused mid-send: the response (if any) is still in our receive buffer
        try:
            return await _read_any_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
    finally:
        writer.close()


def _smuggle(ident: str) -> bytes:
    """A complete request for /upload?id=IDENT: the part a smuggling pair tries to slip through."""
    return f"GET /upload?id={ident} HTTP/1.1\r\nHost: HOST\r\n\r\n".encode()


#: name -> request bytes (HOST is replaced with the tunnel's host; SMUGGLED with a hidden request).
MALFORMED: dict[str, bytes] = {
    # request lines
    "garbage request line": b"GARBAGE\r\n\r\n",
    "http/0.9 request line": b"GET /\r\n\r\n",
    "unknown http version": b"GET / HTTP/9.9\r\nHost: HOST\r\n\r\n",
    "nul in the method": b"G\x00ET / HTTP/1.1\r\nHost: HOST\r\n\r\n",
    "nul in the target": b"GET /a\x00b HTTP/1.1\r\nHost: HOST\r\n\r\n",
    "space in the target": b"GET /a b HTTP/1.1\r\nHost: HOST\r\n\r\n",
    "bare lf line endings with cr inside": b"GET / HTTP/1.1\rHost: HOST\r\n\r\n",
    "target without a slash": b"GET foo HTTP/1.1\r\nHost: HOST\r\n\r\n",
    # header names and values
    "space in a header name": b"GET / HTTP/1.1\r\nHost: HOST\r\nBad Name: x\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-Bad : x\r\n\r\n",
    "nul in a header name": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-B\x00ad: x\r\n\r\n",
    "nul in a header value": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-Bad: a\x00b\r\n\r\n",
    "cr in a header value": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-Bad: a\rInjected: yes\r\n\r\n",
    "lf in a header name": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-\nBad: a\r\n\r\n",
    "header line without a colon": b"GET / HTTP/1.1\r\nHost: HOST\r\nNoColonHere\r\n\r\n",
    "obs-fold continuation line": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-Folded: a\r\n  b\r\n\r\n",
    "empty header name": b"GET / HTTP/1.1\r\nHost: HOST\r\n: empty\r\n\r\n",
    # smuggling pairs
    "content-length with transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED"
    ),
    "transfer-encoding with content-length": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nSMUGGLED"
    ),
    "two differing content-lengths": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\nContent-Length: 60\r\n\r\nSMUGGLED"
    ),
    "content-length list": b"POST / HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0, 60\r\n\r\nSMUGGLED",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: HOST\r\nContent-Length: -1\r\n\r\nSMUGGLED",
    "content-length with a plus sign": b"POST / HTTP/1.1\r\nHost: HOST\r\nContent-Length: +0\r\n\r\nSMUGGLED",
    "transfer-encoding other than chunked": b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: gzip\r\n\r\nSMUGGLED",
    "chunked not last": b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\nSMUGGLED",
    "obfuscated transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nSMUGGLED"
    ),
    "transfer-encoding on http/1.0": b"POST / HTTP/1.0\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED",
    "space before the transfer-encoding colon": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nSMUGGLED"
    ),
    # chunk sizes
    "chunk size not hex": b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "negative chunk size": b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
    "chunk size overflowing 64 bits": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk data longer than its size": (
        b"POST / HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n"
    ),
    # sizes
    "huge request target": b"GET /" + b"u" * (MAX_URL_BYTES + 10) + b" HTTP/1.1\r\nHost: HOST\r\n\r\n",
    "huge header block": b"GET / HTTP/1.1\r\nHost: HOST\r\n" + b"".join(
        b"X-Fill-%d: %s\r\n" % (i, b"f" * 200) for i in range(MAX_HEADER_BYTES // 200 + 2)
    ) + b"\r\n",
    "over-long header line": b"GET / HTTP/1.1\r\nHost: HOST\r\nX-Long: " + b"l" * (MAX_HEADER_BYTES * 3) + b"\r\n\r\n",
    "thousands of headers": b"GET / HTTP/1.1\r\nHost: HOST\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(3000)) + b"\r\n",
}


#: Lenient forms RFC 9112 lets a server accept (section 3: "MAY parse on whitespace-delimited word
#: boundaries"): accepted, and re-serialised to the local server as one well-formed request.
TOLERATED: dict[str, tuple[bytes, str]] = {
    "two spaces in the request line": (b"GET  /tolerated HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n", "/tolerated"),
}


@pytest.mark.parametrize("case", list(TOLERATED))
async def test_a_leniently_parsed_request_line_reaches_the_local_server_as_one_well_formed_request(
    case: str, stack: tuple[Relay, Agent, Origin]
) -> None:
    relay, agent, _ = stack
    data, path = TOLERATED[case]
    response = await _exchange(relay.port, data.replace(b"HOST", agent.host.encode()))
    assert response is not None and response.status == 200, response
    assert json.loads(response.body)["raw_path"] == path


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_request_gets_a_4xx_or_a_closed_connection_and_nothing_ambiguous_reaches_the_local_server(
    case: str, stack: tuple[Relay, Agent, Origin]
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    data = MALFORMED[case].replace(b"SMUGGLED", _smuggle(ident)).replace(b"HOST", agent.host.encode())
    response = await _exchange(relay.port, data)
    if response is not None:
        assert 400 <= response.status < 500, (case, response.status, response.body[:300])
        try:
            described = json.loads(response.body)
        except ValueError:
            described = None
        assert not (isinstance(described, dict) and "raw_path" in described), f"{case} reached the local server: {described}"
    assert await origin_record(origin, ident) is None, f"{case}: the smuggled request reached the local server"
    await relay_still_serves(relay.port, agent.host)


async def test_size_limits_answer_with_their_own_status(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    host = agent.host.encode()
    url = await _exchange(relay.port, MALFORMED["huge request target"].replace(b"HOST", host))
    headers = await _exchange(relay.port, MALFORMED["huge header block"].replace(b"HOST", host))
    assert url is not None and url.status == 414, url
    assert headers is not None and headers.status == 431, headers


async def test_a_well_formed_request_after_a_smuggling_attempt_on_the_same_connection_is_not_confused(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    data = MALFORMED["content-length with transfer-encoding"].replace(b"SMUGGLED", _smuggle(ident))
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(data.replace(b"HOST", agent.host.encode()))
        first = await read_response(reader)
        rest = await asyncio.wait_for(reader.read(), RAW_READ_TIMEOUT)
    finally:
        writer.close()
    assert first.status == 400
    assert rest == b"", f"a second response followed the refusal: {rest[:200]!r}"
    assert await origin_record(origin, ident) is None


#: Connection-specific request headers a proxy must drop (RFC 9110 section 7.6.1), plus the non-standard Proxy-Connection.
HOP_REQUEST_HEADERS = [
    ("Connection", "keep-alive, X-Named-By-Connection"),
    ("X-Named-By-Connection", "secret"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
    ("Proxy-Connection", "keep-alive"),
    ("X-End-To-End", "kept"),
]

HOP_NAMES = {"keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate", "proxy-connection",
             "x-named-by-connection", "transfer-encoding"}


async def test_hop_by_hop_request_headers_never_reach_the_local_server(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    lines = "".join(f"{k}: {v}\r\n" for k, v in HOP_REQUEST_HEADERS)
    data = f"POST /echo HTTP/1.1\r\nHost: {agent.host}\r\n{lines}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    response = await _exchange(relay.port, data.encode())
    assert response is not None and response.status == 200, response
    info = json.loads(response.body)
    names = [k.lower() for k, _ in info["headers"]]
    # Transfer-Encoding may come back: the agent's own framing of the unknown-length body on its hop.
    assert not (HOP_NAMES - {"transfer-encoding"}) & set(names), info["headers"]
    assert all(v.lower() == "chunked" for k, v in info["headers"] if k.lower() == "transfer-encoding")
    assert all("x-named-by-connection" not in v.lower() for k, v in info["headers"] if k.lower() == "connection")
    assert ["x-end-to-end", "kept"] in [[k.lower(), v] for k, v in info["headers"]]
    assert info["body_length"] == 3


async def test_a_non_websocket_upgrade_request_is_not_passed_on_as_an_upgrade(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    data = f"GET /h2c HTTP/1.1\r\nHost: {agent.host}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    response = await _exchange(relay.port, data.encode())
    assert response is not None
    if response.status == 200:
        names = {k.lower() for k, _ in json.loads(response.body)["headers"]}
        assert not {"upgrade", "http2-settings"} & names, names
    else:
        assert 400 <= response.status < 500, response
    await relay_still_serves(relay.port, agent.host)


async def test_hop_by_hop_response_headers_never_reach_the_client(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    response = await _exchange(relay.port, f"GET /hop HTTP/1.1\r\nHost: {agent.host}\r\nConnection: close\r\n\r\n".encode())
    assert response is not None and response.status == 200 and response.body == b"hop", response
    names = {k.lower() for k, _ in response.headers}
    assert not (HOP_NAMES - {"transfer-encoding"}) & names, response.headers
    assert all("x-named-by-connection" not in v.lower() for v in response.get_all("Connection"))
    assert response.get("X-End-To-End") == "kept"


async def test_an_absolute_form_target_matching_its_host_reaches_the_local_server_as_a_path(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, _ = stack
    data = f"GET http://{agent.host}/abs?x=1 HTTP/1.1\r\nHost: {agent.host}\r\nConnection: close\r\n\r\n"
    response = await _exchange(relay.port, data.encode())
    assert response is not None and response.status == 200, response
    assert json.loads(response.body)["raw_path"] == "/abs?x=1"


async def test_an_absolute_form_target_naming_another_host_is_refused(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    data = f"GET http://elsewhere.localhost:{relay.port}/x HTTP/1.1\r\nHost: {agent.host}\r\nConnection: close\r\n\r\n"
    response = await _exchange(relay.port, data.encode())
    # Routed by the target's authority (RFC 9112 section 3.2.2): that name has no agent, so 502 offline;
    # with an agent it would be 400 host-mismatch (tests/security/test_isolation.py). Never this tunnel.
    assert response is not None and response.status == 502, response
    assert response.get("X-Relay-Error") == "tunnel-offline"
    assert b"raw_path" not in response.body


@pytest.mark.parametrize("bad_chunk", [b"zz\r\nabc\r\n", b"-5\r\nabc\r\n", b"3\r\nabcdef\r\n"], ids=["not hex", "negative", "overlong"])
async def test_an_invalid_chunk_arriving_after_the_stream_opened_ends_the_exchange_promptly(
    bad_chunk: bytes, stack: tuple[Relay, Agent, Origin]
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(
            f"POST /upload?id={ident} HTTP/1.1\r\nHost: {agent.host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"4\r\ngood\r\n"
        )
        await writer.drain()
        deadline = asyncio.get_running_loop().time() + 20
        while await origin_record(origin, ident) is None:  # the stream is open and the body flowing
            assert asyncio.get_running_loop().time() < deadline, "the request never reached the origin"
            await asyncio.sleep(0.05)
        writer.write(bad_chunk)
        await writer.drain()
        try:
            async with asyncio.timeout(RAW_READ_TIMEOUT):
                data = await reader.read()  # until the relay closes
        except ConnectionError:
            data = b""
    finally:
        writer.close()
    assert data == b"" or re.match(rb"HTTP/1\.1 4\d\d ", data), data[:200]
    await wait_for_record(origin, ident, "aborted")  # the local server saw the request end early
    await relay_still_serves(relay.port, agent.host)
