#!/usr/bin/env python3
"""The narrowest relay and agent that still speak our wire shape: what a rewritten hot path could reach.

``pipe_floor.py`` measures two byte pipes: no parsing, no framing.  This one does
the per-request work no tunnel of our design can skip, and nothing else:

- relay: llhttp parses the public request; the head is encoded by
  ``relay_protocol.heads`` (JSON) into an OPEN frame inside one unmasked websocket
  binary frame; the agent's RESPONSE and DATA frames come back in one websocket
  message and become one HTTP/1.1 response write.
- agent: the websocket frame is unmasked, the OPEN frame's head decoded and
  validated by ``heads``, the request written to a keep-alive connection to the
  origin; llhttp parses the answer, which goes back as RESPONSE + DATA(END) in one
  masked websocket message.

Multiplexer frames are made and read by ``relay_protocol.frames`` (its decoder
validates them as the product's does); websocket frames are read by hand.

No handshake, flow control, metrics, logs, inspector, limits, deadlines or error
handling (a bad byte ends the process): a measuring stick, never a product.
``cpu_per_request.py --narrow`` runs it beside the real stack.

    python bench/narrow_floor.py relay PUBLIC_PORT AGENT_PORT
    python bench/narrow_floor.py agent AGENT_PORT ORIGIN_PORT
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys

import httptools
from websockets.speedups import apply_mask  # type: ignore[import-not-found]

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from relay_protocol.frames import Flag, FrameDecoder, FrameType, encode_frame
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.httpheaders import strip_hop_by_hop
from relay_protocol.websocket import frame_head

#: ``NARROW_HEADS=binary``: heads as NUL-separated fields instead of ``heads``' JSON (what a binary encoding saves).
BINARY = os.environ.get("NARROW_HEADS") == "binary"


def encode_fields(fields: list[str]) -> bytes:
    return "\0".join(fields).encode()


def decode_fields(payload: bytes) -> list[str]:
    text = payload.decode()
    if "\r" in text or "\n" in text:
        raise ValueError("CR or LF in a head")
    return text.split("\0")


OPEN, RESPONSE, DATA, END = FrameType.OPEN, FrameType.RESPONSE, FrameType.DATA, Flag.END_STREAM


def ws_messages(buffer: bytearray, masked: bool) -> list[bytes]:
    """Whole binary messages at the front of ``buffer`` (removed from it)."""
    out = []
    while len(buffer) >= 2:
        n = buffer[1] & 0x7F
        at = 2
        if n == 126:
            if len(buffer) < 4:
                break
            n, at = struct.unpack_from("!H", buffer, 2)[0], 4
        elif n == 127:
            if len(buffer) < 10:
                break
            n, at = struct.unpack_from("!Q", buffer, 2)[0], 10
        key = b""
        if masked:
            key, at = bytes(buffer[at : at + 4]), at + 4
        if len(buffer) < at + n:
            break
        payload = bytes(buffer[at : at + n])
        del buffer[: at + n]
        out.append(apply_mask(payload, key) if masked else payload)
    return out


class Public(asyncio.Protocol):
    """A public connection at the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = transport.get_extra_info("peername")[0]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        headers = strip_hop_by_hop(self.headers)
        headers += [("X-Forwarded-For", self.peer), ("X-Forwarded-Proto", "http")]
        method, target = self.parser.get_method().decode(), self.url.decode()
        if BINARY:
            head = encode_fields([method, target, self.peer, *[x for pair in headers for x in pair]])
        else:
            head = RequestHead(method, target, headers, self.peer).encode()
        self.url, self.headers = b"", []
        self.relay.open(self, head)

    def answer(self, head: ResponseHead, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the caller went away (wrk ends a round with requests in flight)
        lines = [f"HTTP/1.1 {head.status} {head.reason}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in head.headers)
        lines.append("\r\n")
        self.transport.write("".join(lines).encode() + body)  # type: ignore[union-attr]


class Relay(asyncio.Protocol):
    """The agent's connection at the relay (a websocket after its handshake, here without one)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.frames = FrameDecoder()
        self.streams: dict[int, tuple[Public, ResponseHead | None]] = {}
        self.next_id = 1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def open(self, public: Public, head: bytes) -> None:
        sid = self.next_id
        self.next_id += 2
        self.streams[sid] = (public, None)
        frame = encode_frame(OPEN, END, sid, head)
        self.transport.write(frame_head(len(frame), masked=False) + frame)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for message in ws_messages(self.buffer, masked=True):
            for ftype, flags, sid, payload in self.frames.feed(message):
                public, head = self.streams[sid]
                if ftype == RESPONSE:
                    if BINARY:
                        f = decode_fields(payload)
                        head = ResponseHead(int(f[0]), f[1], list(zip(f[2::2], f[3::2])))
                    else:
                        head = ResponseHead.decode(payload)
                    self.streams[sid] = (public, head)
                if flags & END:
                    del self.streams[sid]
                    public.answer(head, payload if ftype == DATA else b"")  # type: ignore[arg-type]


class Origin(asyncio.Protocol):
    """A keep-alive connection from the agent to the origin."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.parser = httptools.HttpResponseParser(self)
        self.sid = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_status(self, reason: bytes) -> None:
        self.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if BINARY:
            head = encode_fields([str(self.parser.get_status_code()), self.reason, *[x for pair in self.headers for x in pair]])
        else:
            head = ResponseHead(self.parser.get_status_code(), self.reason, self.headers).encode()
        body, self.headers, self.body = self.body, [], b""
        message = encode_frame(RESPONSE, 0, self.sid, head) + encode_frame(DATA, END, self.sid, body)
        key = os.urandom(4)
        self.agent.transport.write(frame_head(len(message), masked=True) + key + apply_mask(message, key))  # type: ignore[union-attr]
        self.agent.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.agent.idle:
            self.agent.idle.remove(self)


class Agent(asyncio.Protocol):
    """The agent's websocket to the relay."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.frames = FrameDecoder()
        self.idle: list[Origin] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for message in ws_messages(self.buffer, masked=False):
            for _ftype, _flags, sid, payload in self.frames.feed(message):
                if BINARY:
                    f = decode_fields(payload)
                    head = RequestHead(f[0], f[1], list(zip(f[3::2], f[4::2])), f[2])
                else:
                    head = RequestHead.decode(payload)
                origin = self.idle.pop()
                origin.sid = sid
                lines = [f"{head.method} {head.target} HTTP/1.1\r\n"]
                lines.extend(f"{k}: {v}\r\n" for k, v in head.headers)
                lines.append("\r\n")
                origin.transport.write("".join(lines).encode())  # type: ignore[union-attr]


async def relay(public_port: int, agent_port: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Relay] = loop.create_future()

    def agent_connected() -> Relay:
        conn = Relay()
        ready.set_result(conn)
        return conn

    await loop.create_server(agent_connected, "127.0.0.1", agent_port)
    print("listening", flush=True)
    conn = await ready
    server = await loop.create_server(lambda: Public(conn), "127.0.0.1", public_port)
    await server.serve_forever()


async def agent(agent_port: int, origin_port: int) -> None:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Agent, "127.0.0.1", agent_port)
    for _ in range(64):
        _, origin = await loop.create_connection(lambda: Origin(conn), "127.0.0.1", origin_port)
        conn.idle.append(origin)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    role, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    uvloop.run(relay(a, b) if role == "relay" else agent(a, b))
