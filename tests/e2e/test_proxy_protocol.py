"""``--proxy-protocol``: behind a real haproxy in TCP mode, the relay sees each client's own address.

haproxy (Debian's) listens on two ports in front of one relay: one sends the
PROXY header version 2 (``send-proxy-v2``), the other version 1
(``send-proxy``).  Clients connect from 127.0.0.2, haproxy from 127.0.0.1
(the relay's ``--trusted-proxy``), so the address the local server gets in
``X-Forwarded-For`` tells whether the header was read.  Straight to the relay,
a connection without a header, or with one from an untrusted address, is
closed without an answer.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.clients import build_request, read_response
from support.localrelay import FORWARDING_LINE, Origin, agent_argv, get_direct, start_origin, wait_until
from support.ports import LOOPBACK, free_port
from support.processes import ProcessGroup, python_module

from relay_server.proxyheader import v1_header

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (apt-get install -y haproxy)")

#: Where the public clients connect from: not the balancer's address, not trusted.
CLIENT = "127.0.0.2"
STEP = 10.0

HAPROXY = """
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend v2
    bind {host}:{v2}
    default_backend relay_v2
frontend v1
    bind {host}:{v1}
    default_backend relay_v1
backend relay_v2
    server relay {host}:{relay} send-proxy-v2 source {host}
backend relay_v1
    server relay {host}:{relay} send-proxy source {host}
"""


@dataclass
class Stack:
    relay_port: int
    v2_port: int
    v1_port: int
    origin: Origin
    name: str


@pytest.fixture(scope="module")
def stack(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("proxy-protocol")
    origin = start_origin(module_processes)
    relay_port, v2_port, v1_port = free_port(), free_port(), free_port()
    relay = module_processes.start("relay:proxy-protocol", python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(relay_port), "--data-dir", str(data),
        "--open", "--proxy-protocol", "--trusted-proxy", "127.0.0.1/32",
    ))
    config = data / "haproxy.cfg"
    config.write_text(HAPROXY.format(host=LOOPBACK, v2=v2_port, v1=v1_port, relay=relay_port))
    module_processes.start("haproxy", ["haproxy", "-db", "-f", str(config)])
    wait_until(
        lambda: get_direct(v2_port, "/_relay/health", host=f"localhost:{relay_port}", timeout=1.0)[0] == 200,
        15, message="the relay healthy through haproxy",
    )
    agent = module_processes.start("agent:proxied", agent_argv(v2_port, str(origin.port), None, "proxied"))
    name = agent.wait_for_line(FORWARDING_LINE, timeout=15).group(2)
    yield Stack(relay_port, v2_port, v1_port, origin, name)
    assert "Traceback" not in relay.output(), relay.output()


async def exchange(port: int, request: bytes, source: str = CLIENT, preamble: bytes = b"") -> dict | None:
    """Send ``preamble`` + ``request`` from ``source``; the origin's JSON description, or None if the connection closed."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, (LOOPBACK, port)), STEP)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(preamble + request)
        await writer.drain()
        try:
            response = await asyncio.wait_for(read_response(reader), STEP)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        assert response.status == 200, response
        return json.loads(response.body)
    finally:
        writer.close()


def forwarded_for(info: dict) -> list[str]:
    return [v for k, v in info["headers"] if k.lower() == "x-forwarded-for"]


@pytest.mark.parametrize("version", ["v2", "v1"])
@pytest.mark.parametrize("method", ["GET", "POST"])  # the lean front, and aiohttp's path (a body)
async def test_through_haproxy_the_local_server_sees_the_clients_address(stack: Stack, version: str, method: str) -> None:
    port = stack.v2_port if version == "v2" else stack.v1_port
    host = f"{stack.name}.localhost:{stack.relay_port}"
    body = b"hello" if method == "POST" else b""
    info = await exchange(port, build_request(method, "/who", host, [("Connection", "close")], body))
    assert info is not None and info["raw_path"] == "/who" and info["body_length"] == len(body)
    assert forwarded_for(info) == [CLIENT]


async def test_a_keep_alive_connection_keeps_the_client_address_across_requests(stack: Stack) -> None:
    host = f"{stack.name}.localhost:{stack.relay_port}"
    sock = socket.socket()
    sock.bind((CLIENT, 0))
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, stack.v2_port)), STEP)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        seen = []
        for method, body in (("GET", b""), ("POST", b"xyz"), ("GET", b"")):  # lean, handed to aiohttp, aiohttp
            writer.write(build_request(method, "/again", host, [("Connection", "keep-alive")], body))
            response = await asyncio.wait_for(read_response(reader), STEP)
            seen.append(forwarded_for(json.loads(response.body)))
        assert seen == [[CLIENT]] * 3
    finally:
        writer.close()


async def test_straight_to_the_relay_without_a_header_the_connection_is_closed(stack: Stack) -> None:
    host = f"{stack.name}.localhost:{stack.relay_port}"
    assert await exchange(stack.relay_port, build_request("GET", "/direct", host), source=LOOPBACK) is None


async def test_the_header_is_believed_from_the_trusted_balancer_only(stack: Stack) -> None:
    host = f"{stack.name}.localhost:{stack.relay_port}"
    header = v1_header(("203.0.113.7", 40000), (LOOPBACK, stack.relay_port))
    info = await exchange(stack.relay_port, build_request("GET", "/named", host), source=LOOPBACK, preamble=header)
    assert info is not None and forwarded_for(info) == ["203.0.113.7"]
    # The same header from an address that is no --trusted-proxy: closed, never believed.
    assert await exchange(stack.relay_port, build_request("GET", "/named", host), source=CLIENT, preamble=header) is None


#: ``relay-server serve --self-signed`` prints where its local CA is.
CA_LINE = r"^Self-signed HTTPS: local CA (\S+) "


@pytest.fixture(scope="module")
def tls_stack(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[tuple]:
    """A second relay with HTTPS (self-signed), haproxy sending v2 headers to both of its listeners."""
    data: Path = tmp_path_factory.mktemp("proxy-protocol-tls")
    relay_http, relay_https, lb_http, lb_https = free_port(), free_port(), free_port(), free_port()
    relay = module_processes.start("relay:proxy-protocol-tls", python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(relay_http), "--https-port", str(relay_https),
        "--self-signed", "--data-dir", str(data), "--open", "--proxy-protocol", "--trusted-proxy", "127.0.0.1/32",
    ))
    ca = relay.wait_for_line(CA_LINE, timeout=15).group(1)
    config = data / "haproxy.cfg"
    config.write_text(HAPROXY.format(host=LOOPBACK, v2=lb_http, v1=lb_https, relay=relay_http).replace(
        f"server relay {LOOPBACK}:{relay_http} send-proxy source",
        f"server relay {LOOPBACK}:{relay_https} send-proxy-v2 source",
    ))
    module_processes.start("haproxy:tls", ["haproxy", "-db", "-f", str(config)])
    wait_until(
        lambda: get_direct(lb_http, "/_relay/health", host=f"localhost:{relay_http}", timeout=1.0)[0] == 200,
        15, message="the TLS relay healthy through haproxy",
    )
    agent = module_processes.start(
        "agent:proxied-tls", agent_argv(lb_http, str(stack.origin.port), None, "proxiedtls")
    )
    name = agent.wait_for_line(r"^Forwarding https://([a-z0-9-]+)\.localhost:", timeout=15).group(1)
    yield lb_https, relay_https, ca, name
    assert "Traceback" not in relay.output(), relay.output()


async def test_over_tls_through_haproxy_the_local_server_sees_the_clients_address(tls_stack: tuple) -> None:
    import ssl

    lb_https, relay_https, ca, name = tls_stack
    context = ssl.create_default_context(cafile=ca)
    sock = socket.socket()
    sock.bind((CLIENT, 0))
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, lb_https)), STEP)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(sock=sock, ssl=context, server_hostname=f"{name}.localhost"), STEP
    )
    try:
        infos = []
        for method, body in (("GET", b""), ("POST", b"tls body")):  # the lean front, then aiohttp's path
            writer.write(build_request(method, "/tls", f"{name}.localhost:{relay_https}", [("Connection", "keep-alive")], body))
            response = await asyncio.wait_for(read_response(reader), STEP)
            assert response.status == 200, response
            infos.append(json.loads(response.body))
    finally:
        writer.close()
    for info in infos:
        assert forwarded_for(info) == [CLIENT]
        assert [v for k, v in info["headers"] if k.lower() == "x-forwarded-proto"] == ["https"]


async def test_a_malformed_or_missing_header_from_the_balancer_closes_the_connection(stack: Stack) -> None:
    """From the trusted address too: a header that does not parse, or none within 5 s, and the connection goes."""
    host = f"{stack.name}.localhost:{stack.relay_port}"
    malformed = b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 80\r\n"
    assert await exchange(stack.relay_port, build_request("GET", "/bad", host), source=LOOPBACK, preamble=malformed) is None
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, (LOOPBACK, stack.relay_port)), STEP)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"PROXY TCP4 203.0.113.7")  # and then nothing more
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), STEP) == b""  # closed, no answer
        assert 4.0 <= loop.time() - started < STEP
    finally:
        writer.close()
