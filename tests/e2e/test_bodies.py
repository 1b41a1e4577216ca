"""Bodies through the tunnel: large, chunked, streamed; compared by SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator

import aiohttp

from support import payloads
from support.localrelay import Agent, Origin

MB = 1_000_000


async def _sha256_of_response(response: aiohttp.ClientResponse) -> tuple[str, int]:
    digest = hashlib.sha256()
    length = 0
    async for chunk in response.content.iter_chunked(1 << 20):
        digest.update(chunk)
        length += len(chunk)
    return digest.hexdigest(), length


async def test_a_100_mb_download_arrives_byte_identical(agent: Agent, client: aiohttp.ClientSession) -> None:
    size, seed = 100 * MB, 101
    async with client.get(f"{agent.public_url}/_o/download?size={size}&seed={seed}") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(size)
        sha, length = await _sha256_of_response(response)
    assert length == size
    assert sha == payloads.sha256_hex(seed, size)


async def test_a_50_mb_upload_with_content_length_arrives_byte_identical(agent: Agent, client: aiohttp.ClientSession) -> None:
    size, seed = 50 * MB, 50
    body = payloads.payload(seed, size)
    async with client.put(f"{agent.public_url}/_o/upload", data=body) as response:
        assert response.status == 200
        info = await response.json()
    assert info["length"] == size
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert info["content_length"] == str(size)
    assert info["method"] == "PUT"


async def test_a_chunked_response_without_content_length_arrives_byte_identical(agent: Agent, client: aiohttp.ClientSession) -> None:
    size, seed = 5 * MB + 17, 5
    async with client.get(f"{agent.public_url}/_o/chunked?size={size}&seed={seed}") as response:
        assert response.status == 200
        assert "Content-Length" not in response.headers
        sha, length = await _sha256_of_response(response)
    assert length == size
    assert sha == payloads.sha256_hex(seed, size)


async def test_a_chunked_upload_arrives_byte_identical(agent: Agent, client: aiohttp.ClientSession) -> None:
    size, seed = 20 * MB + 3, 20
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        sizes = (1, 4096, 100_003, 1 << 20)
        turn = 0
        for chunk in payloads.chunks(seed, size):
            view = memoryview(chunk)
            while view:
                piece = bytes(view[: sizes[turn % len(sizes)]])
                turn += 1
                view = view[len(piece):]
                sent.update(piece)
                yield piece

    async with client.post(f"{agent.public_url}/_o/upload", data=body()) as response:
        assert response.status == 200
        info = await response.json()
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert info["length"] == size
    assert info["sha256"] == sent.hexdigest() == payloads.sha256_hex(seed, size)
    assert info["content_length"] is None


async def test_a_streamed_response_is_flushed_chunk_by_chunk_not_buffered(
    agent: Agent, origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = secrets.token_hex(6)
    async with client.get(f"{agent.public_url}/_o/drip?id={ident}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        # The origin holds the rest of the body until released: the first line must arrive on its own.
        first = await asyncio.wait_for(response.content.readline(), 5)
        assert first == b'{"part":"first"}\n'
        async with client.get(f"{origin.url}/_o/release?id={ident}") as released:
            assert released.status == 200
        rest = await asyncio.wait_for(response.read(), 10)
    assert rest == b'{"part":"second"}\n'
