"""Full duplex: a request body and its echo cross the tunnel at the same time.

The public client sends a piece only after the previous one came back, so the
exchange can only finish if every hop forwards request bytes while the response
is already flowing; with ``Expect: 100-continue`` (what curl sends for large
uploads) the local server's 100 and its 200 may arrive together, and the body
must still go.
"""

from __future__ import annotations

import asyncio

import pytest

from support.clients import build_request
from support.localrelay import Agent
from support.payloads import payload
from support.ports import LOOPBACK

PIECES = 8
PIECE = 64 * 1024

#: Bound on each round trip of one piece (a hang fails here, not at the test timeout).
ROUND_TRIP = 5.0


async def _read_head(reader: asyncio.StreamReader) -> list[bytes]:
    """Interim heads, then the final one; returns every status line seen."""
    lines = []
    while True:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ROUND_TRIP)
        lines.append(head.split(b"\r\n", 1)[0])
        if not head.startswith(b"HTTP/1.1 1"):
            return lines


async def _read_chunked_piece(reader: asyncio.StreamReader, size: int) -> bytes:
    """``size`` bytes of a chunked body, across however many chunks they came in."""
    got = b""
    while len(got) < size:
        length = int((await reader.readuntil(b"\r\n")).strip(), 16)
        got += await reader.readexactly(length)
        await reader.readexactly(2)
    return got


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100-continue"])
async def test_each_piece_comes_back_before_the_next_is_sent(tunnel: Agent, expect: bool) -> None:
    body = payload(7, PIECES * PIECE)
    headers = [("Content-Length", str(len(body))), ("Content-Type", "application/octet-stream")]
    if expect:
        headers.append(("Expect", "100-continue"))
    reader, writer = await asyncio.open_connection(LOOPBACK, int(tunnel.host.rsplit(":", 1)[1]))
    try:
        writer.write(build_request("POST", "/s/echo", tunnel.host, headers))
        await writer.drain()
        if expect:
            # The relay answers 100 itself once the request is on its way to the agent.
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ROUND_TRIP)
            assert first.startswith(b"HTTP/1.1 100"), first
        echoed = b""
        statuses: list[bytes] = []
        for index in range(PIECES):
            piece = body[index * PIECE : (index + 1) * PIECE]
            writer.write(piece)
            await writer.drain()
            if index == 0:
                statuses = await _read_head(reader)
            echoed += await asyncio.wait_for(_read_chunked_piece(reader, PIECE), ROUND_TRIP)
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), ROUND_TRIP) == b"0\r\n\r\n"
    finally:
        writer.close()
    assert statuses[-1].startswith(b"HTTP/1.1 200"), statuses
    assert echoed == body
