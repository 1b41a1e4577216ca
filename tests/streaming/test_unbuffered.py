"""Streaming bodies pass chunk by chunk: each event arrives when it is written, and encoded bodies arrive untouched."""

from __future__ import annotations

import base64
import gzip
import hashlib
import statistics
import time

import aiohttp
import pytest

from streaming.stream_origin import GZIP_STREAM_BODY, GZIP_STREAM_TEXT
from streaming.tools import read_events
from support.localrelay import Agent
from support.payloads import GZIP_TEXT

#: Events in one timing run, and the gap the origin leaves between them.
EVENTS = 12
INTERVAL = 0.1

#: Latest an event may arrive after the origin wrote it (the benchmark target is 5 ms;
#: this allows for a loaded two-core machine, and is still far below any buffering).
MAX_EVENT_DELAY = 0.2

#: Latest the first event may arrive after the request was sent.
MAX_FIRST_EVENT = 0.3

#: What each kind of event stream is served as (None: no Content-Type at all).
CONTENT_TYPES = {"sse": "text/event-stream", "ndjson": "application/x-ndjson", "untyped": None}


@pytest.mark.parametrize("kind", ["sse", "ndjson", "untyped"])
async def test_events_written_100_ms_apart_arrive_100_ms_apart(
    kind: str, tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    started = time.time()
    async with client.get(f"{tunnel.public_url}/s/events?kind={kind}&n={EVENTS}&interval={INTERVAL}") as response:
        assert response.status == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        if CONTENT_TYPES[kind] is not None:
            assert response.headers["Content-Type"] == CONTENT_TYPES[kind]
        arrivals = await read_events(response, kind)
    finished = time.time()

    assert [a.data["i"] for a in arrivals] == list(range(EVENTS))
    delays = [round(a.delay, 3) for a in arrivals]
    first, last = arrivals[0], arrivals[-1]
    assert first.arrived - started < MAX_FIRST_EVENT, f"first event after {first.arrived - started:.3f}s"
    assert finished - started >= (EVENTS - 1) * INTERVAL, "the stream ended sooner than the origin wrote it"
    assert first.arrived < last.data["t"] - 0.8, "the first event arrived only once the last was written: buffered"
    assert max(delays) < MAX_EVENT_DELAY, f"events arrived late after being written: {delays}"
    gaps = [b.arrived - a.arrived for a, b in zip(arrivals, arrivals[1:])]
    assert 0.07 < statistics.median(gaps) < 0.15, f"arrival gaps {[round(g, 3) for g in gaps]}"


async def test_a_response_without_a_content_type_arrives_without_one(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{tunnel.public_url}/s/events?kind=untyped&n=2&interval=0") as response:
        assert response.status == 200
        assert (await response.read()).count(b"\n") == 2  # both events arrived
        # The origin sent none (the client may sniff); a proxy must not invent one.
        assert "Content-Type" not in response.headers, response.headers.get("Content-Type")


async def test_a_long_lived_event_stream_is_not_cut_by_an_idle_timeout(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    # Ten seconds, an event a second: longer than the relay's response timeout (5 s) and
    # any keep-alive or read timeout a hop might wrongly apply to a quiet stream.
    async with client.get(f"{tunnel.public_url}/s/events?kind=sse&n=11&interval=1") as response:
        assert response.status == 200
        arrivals = await read_events(response, "sse", line_timeout=3.0)
    assert [a.data["i"] for a in arrivals] == list(range(11))
    assert arrivals[-1].arrived - arrivals[0].arrived >= 9.5
    assert max(a.delay for a in arrivals) < 0.5, [round(a.delay, 3) for a in arrivals]


async def test_a_gzip_encoded_response_arrives_byte_identical_with_its_content_encoding(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    expected = gzip.compress(GZIP_TEXT, mtime=0)
    async with client.get(f"{tunnel.public_url}/_o/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.status == 200
        body = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(expected))
        assert response.headers["X-Origin-Sha256"] == hashlib.sha256(expected).hexdigest()
    assert body == expected


async def test_a_streamed_gzip_response_arrives_byte_identical_and_still_chunked(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{tunnel.public_url}/s/gzip-stream", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.headers
        body = await response.read()
    assert hashlib.sha256(body).hexdigest() == response.headers["X-Body-Sha256"]
    assert body == GZIP_STREAM_BODY
    assert gzip.decompress(body) == GZIP_STREAM_TEXT


async def test_a_gzip_encoded_request_body_reaches_the_local_server_untouched(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    compressed = gzip.compress(GZIP_STREAM_TEXT, mtime=0)
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    async with client.post(f"{tunnel.public_url}/upload-gzip", data=compressed, headers=headers) as response:
        assert response.status == 200
        seen = await response.json()
    received = dict((k.lower(), v) for k, v in seen["headers"])
    assert received["content-encoding"] == "gzip"
    assert received["content-length"] == str(len(compressed))
    assert base64.b64decode(seen["body_b64"]) == compressed
