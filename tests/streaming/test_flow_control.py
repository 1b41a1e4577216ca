"""Flow control under pressure: a slow reader holds the whole path back, a bulk download starves nobody."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from streaming.tools import new_id, origin_state, rss_bytes, wait_for_state
from support.localrelay import Agent, Origin, Relay
from support.payloads import CHUNK_SIZE, payload

MIB = 1 << 20

#: Body the origin offers the slow reader, and how the reader trickles through it.
SLOW_BODY = 300 * MIB
TRICKLE_READ = 16 * 1024
TRICKLE_PAUSE = 0.05
TRICKLE_SECONDS = 3.0

#: Most the relay's or the agent's RSS may grow while a slow reader holds a 300 MB body back.
MAX_RSS_GROWTH = 64 * MIB

#: Most the origin may have handed to its socket by then: the per-stream window (4 MiB),
#: the socket buffers of three TCP hops and one chunk in flight, nowhere near the body.
MAX_ORIGIN_AHEAD = 40 * 1000 * 1000

#: The bulk download that runs while the small requests are timed.
BULK_BODY = 1 << 30
SMALL_REQUESTS = 20
MAX_SMALL_LATENCY = 1.0


async def test_a_slow_reader_keeps_agent_and_relay_memory_and_the_origin_bounded_by_the_windows(
    tunnel: Agent, open_relay: Relay, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    pids = {"relay": open_relay.process.pid, "agent": tunnel.process.pid}
    before = {name: rss_bytes(pid) for name, pid in pids.items()}
    peak = dict(before)
    received = bytearray()
    async with client.get(f"{tunnel.public_url}/s/big?id={ident}&size={SLOW_BODY}") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(SLOW_BODY)
        deadline = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < deadline:
            received += await asyncio.wait_for(response.content.read(TRICKLE_READ), 5)
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss_bytes(pid))
            await asyncio.sleep(TRICKLE_PAUSE)
        state = await origin_state(client, stream_origin, ident)
        # Leaving the block closes the connection: the stream is reset and the origin let go.
    growth = {name: peak[name] - before[name] for name in pids}

    assert bytes(received) == payload(5, len(received)), "the trickle read wrong bytes"
    assert len(received) < 4 * MIB, "the client was meant to read at a trickle"
    assert state["outcome"] is None, f"the origin got to the end of {SLOW_BODY} bytes: {state}"
    assert len(received) < state["written"] < MAX_ORIGIN_AHEAD, (
        f"the origin wrote {state['written'] / MIB:.1f} MiB while the client read {len(received) / MIB:.2f} MiB"
    )
    for name, grew in growth.items():
        assert grew < MAX_RSS_GROWTH, f"{name} RSS grew by {grew / MIB:.1f} MiB (before {before[name] / MIB:.1f} MiB)"
    await wait_for_state(client, stream_origin, ident, lambda s: s["outcome"] is not None, 5, "the reader leave")


async def test_small_requests_complete_promptly_while_a_1_gb_download_runs_on_the_same_tunnel(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    downloaded = 0
    flowing = asyncio.Event()

    async def bulk() -> None:
        nonlocal downloaded
        async with client.get(f"{tunnel.public_url}/s/big?id={ident}&size={BULK_BODY}") as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                downloaded += len(chunk)
                if downloaded >= 16 * MIB:
                    flowing.set()

    download = asyncio.create_task(bulk())
    try:
        await asyncio.wait_for(flowing.wait(), 10)
        at_start = downloaded
        latencies = []
        for i in range(SMALL_REQUESTS):
            started = time.monotonic()
            async with client.get(f"{tunnel.public_url}/small?i={i}&id={ident}") as response:
                info = await response.json()
            latencies.append(time.monotonic() - started)
            assert response.status == 200
            assert info["raw_path"] == f"/small?i={i}&id={ident}"
        assert not download.done(), f"the download ended ({download}) before the small requests did: nothing was proved"
        during = downloaded - at_start
    finally:
        download.cancel()
        await asyncio.gather(download, return_exceptions=True)
    assert during > 16 * MIB, f"the download stalled while the small requests ran ({during} bytes)"
    slowest = max(latencies)
    rounded = [round(x, 3) for x in latencies]
    assert slowest < MAX_SMALL_LATENCY, f"small request latencies during the download: {rounded}"
