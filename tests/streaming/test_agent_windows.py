"""The agent's own receive windows (``relay-client http --stream-window/--connection-window``).

The relay's windows bound what an agent can make the relay hold; these bound what
a public upload can make the agent hold while its local server reads slowly.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time

import aiohttp
import pytest

import relay_client
import relay_client.agent as agent_module
from relay_client.connection import open_connection
from relay_protocol.driver import MuxStream
from relay_protocol.heads import ResponseHead
from streaming.tools import new_id
from support.localrelay import Origin, Relay
from support.payloads import payload

KIB = 1024
MIB = 1 << 20

#: The agent's windows in these tests, far below the 4 MiB / 32 MiB defaults.
SMALL_STREAM_WINDOW = 64 * KIB
SMALL_CONNECTION_WINDOW = 256 * KIB

#: The body posted: many windows' worth, so it only arrives whole if credit keeps flowing back.
UPLOAD = 1 * MIB

#: How long the relay gets to send what the window allows, then how long nothing more may come.
FILL_TIMEOUT = 10.0
SETTLE = 0.3


async def _wait_for_buffered(stream: MuxStream, size: int) -> None:
    deadline = time.monotonic() + FILL_TIMEOUT
    while stream.buffered < size:
        assert time.monotonic() < deadline, f"only {stream.buffered} of {size} bytes arrived"
        await asyncio.sleep(0.02)


async def test_the_relay_sends_a_request_body_only_as_far_as_the_agents_stream_window(
    open_relay: Relay, client: aiohttp.ClientSession
) -> None:
    streams: asyncio.Queue[MuxStream] = asyncio.Queue()
    name = f"win-{new_id()}"
    conn = await open_connection(
        open_relay.server_url,
        token=None,
        subdomain=name,
        agent_key=secrets.token_hex(16),
        on_stream=streams.put_nowait,
        stream_window=SMALL_STREAM_WINDOW,
        connection_window=SMALL_CONNECTION_WINDOW,
    )
    running = asyncio.create_task(conn.run())
    body = payload(11, UPLOAD)
    post = asyncio.create_task(
        client.post(f"http://{name}.localhost:{open_relay.port}/upload", data=body, timeout=aiohttp.ClientTimeout(total=30))
    )
    try:
        stream = await asyncio.wait_for(streams.get(), 10)
        assert stream.request is not None and stream.request.method == "POST"

        # Nobody reads: the relay sends exactly one window and then waits for credit.
        await _wait_for_buffered(stream, SMALL_STREAM_WINDOW)
        await asyncio.sleep(SETTLE)
        assert stream.buffered == SMALL_STREAM_WINDOW
        assert not stream.complete

        received = bytearray()
        while chunk := await asyncio.wait_for(stream.read(), 10):
            received += chunk
        assert len(received) == UPLOAD
        assert bytes(received) == body, "the body arrived altered"

        stream.send_response(ResponseHead(200, "OK", [("Content-Length", "8")]))
        await stream.write(b"received", end=True)
        response = await asyncio.wait_for(post, 10)
        assert response.status == 200
        assert await response.read() == b"received"
    finally:
        post.cancel()
        conn.mux.close()
        await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 10)


async def test_the_library_passes_its_windows_to_the_relay_and_uploads_still_arrive_whole(
    open_relay: Relay, stream_origin: Origin, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    announced: list[tuple[int, int]] = []
    real_open = agent_module.open_connection

    async def recording_open(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        announced.append((kwargs["stream_window"], kwargs["connection_window"]))  # type: ignore[arg-type]
        return await real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(agent_module, "open_connection", recording_open)
    body = payload(12, UPLOAD)
    tunnel = relay_client.Tunnel(
        f"http://127.0.0.1:{stream_origin.port}",
        server=open_relay.server_url,
        subdomain=f"libwin-{new_id()}",
        stream_window=SMALL_STREAM_WINDOW,
        connection_window=SMALL_CONNECTION_WINDOW,
    )
    async with tunnel:
        async with client.post(f"{tunnel.public_url}/s/echo", data=body) as response:
            assert response.status == 200
            echoed = await response.read()
    assert announced == [(SMALL_STREAM_WINDOW, SMALL_CONNECTION_WINDOW)]
    assert echoed == body, "the echo through 64 KiB windows came back altered"


def test_a_window_the_relay_would_refuse_is_an_error_before_connecting() -> None:
    with pytest.raises(ValueError, match="stream_window must be an integer between 16384"):
        relay_client.Tunnel("http://127.0.0.1:9", server="http://localhost:9", stream_window=1000)
    result = subprocess.run(
        [sys.executable, "-m", "relay_client", "http", "5000", "--connection-window", "1000"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--connection-window" in result.stderr and "16384" in result.stderr
