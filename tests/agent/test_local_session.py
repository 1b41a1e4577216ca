"""The agent's shared local session adds nothing of its own to a request (relay_client/forwarder.py).

The session takes a shortcut past aiohttp's automatic headers; these tests pin what
the local server receives, on a real loopback socket, so the shortcut cannot drift.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from relay_client.forwarder import make_local_session


@pytest.fixture
async def echo_origin() -> AsyncIterator[str]:
    """An in-process origin on 127.0.0.1 answering with the raw request headers it got, one per line."""

    async def echo(request: web.Request) -> web.Response:
        lines = [f"{k.decode()}: {v.decode()}" for k, v in request.raw_headers]
        return web.Response(text="\n".join(lines))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_local_server_gets_exactly_the_forwarded_headers_and_no_automatic_ones(echo_origin: str):
    headers = [("Host", "app.example"), ("X-Rep", "1"), ("X-Rep", "2"), ("Cookie", "a=1")]
    async with make_local_session() as session:
        async with session.get(f"{echo_origin}/p?q=1", headers=headers) as response:
            got = (await response.text()).splitlines()
    assert got == ["Host: app.example", "X-Rep: 1", "X-Rep: 2", "Cookie: a=1"]


async def test_a_body_gets_only_its_framing_header(echo_origin: str):
    async with make_local_session() as session:
        async with session.post(f"{echo_origin}/up", headers=[("Host", "h")], data=b"12345") as response:
            got = (await response.text()).splitlines()
    assert got == ["Host: h", "Content-Length: 5"]


async def test_a_request_with_its_own_skip_list_takes_aiohttps_path(echo_origin: str):
    async with make_local_session() as session:
        async with session.get(f"{echo_origin}/", headers=[("Host", "h")], skip_auto_headers=["X-None"]) as response:
            got = (await response.text()).splitlines()
    assert got == ["Host: h"]
