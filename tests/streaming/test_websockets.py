"""WebSockets through the public URL: messages, pings, close codes and subprotocols pass end to end."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from streaming.tools import new_id, wait_for_state
from support.clients import build_request, raw_request
from support.localrelay import Agent, Origin, Relay
from support.payloads import payload

#: Seconds any one websocket message may take to come back.
ECHO_TIMEOUT = 5.0

#: Websockets held open at the same time in the many-sockets test.
MANY_SOCKETS = 50


async def _echo(ws: aiohttp.ClientWebSocketResponse, message: str | bytes) -> aiohttp.WSMessage:
    if isinstance(message, str):
        await ws.send_str(message)
    else:
        await ws.send_bytes(message)
    return await ws.receive(timeout=ECHO_TIMEOUT)


async def test_text_and_binary_messages_echo_through_the_public_url_exactly(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    texts = ["hello", "héllo ☃ \u00a0 \U0001f600", "x" * 200_000, ""]
    binaries = [bytes(range(256)) * 64, b"\xff\xfe\x00" * 5, payload(3, 3 * 1024 * 1024 + 17), b""]
    async with client.ws_connect(f"{tunnel.public_url}/s/ws?id={new_id()}") as ws:
        for text in texts:
            msg = await _echo(ws, text)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            assert msg.data == text
        for data in binaries:
            msg = await _echo(ws, data)
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            assert msg.data == data, f"binary of {len(data)} bytes came back as {len(msg.data)} different bytes"


async def test_a_ping_from_the_public_client_is_answered_with_its_payload(
    tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(f"{tunnel.public_url}/s/ws?id={new_id()}", autoping=False) as ws:
        await ws.ping(b"are you there?")
        msg = await ws.receive(timeout=ECHO_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.PONG, msg
        assert msg.data == b"are you there?"
        assert (await _echo(ws, "still open")).data == "still open"


async def test_a_close_code_and_reason_from_the_local_server_reach_the_public_client(
    tunnel: Agent, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    async with client.ws_connect(f"{tunnel.public_url}/s/ws?id={ident}") as ws:
        assert (await _echo(ws, "before close")).data == "before close"
        await ws.send_str("close:4001:bye")
        msg = await ws.receive(timeout=ECHO_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        assert (msg.data, msg.extra) == (4001, "bye")
        assert ws.close_code == 4001
    closed = await wait_for_state(client, stream_origin, ident, lambda s: s.get("outcome") is not None, 5, "its close")
    assert closed["outcome"] == "origin-closed", closed


async def test_a_close_code_and_reason_from_the_public_client_reach_the_local_server(
    tunnel: Agent, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    async with client.ws_connect(f"{tunnel.public_url}/s/ws?id={ident}") as ws:
        assert (await _echo(ws, "before close")).data == "before close"
        await asyncio.wait_for(ws.close(code=4002, message=b"client is done"), ECHO_TIMEOUT)
    state = await wait_for_state(
        client, stream_origin, ident, lambda s: s.get("outcome") is not None, 5, "the client's close"
    )
    assert state["outcome"] == "client-closed", state
    assert (state["close_code"], state["close_reason"]) == (4002, "client is done")


async def test_the_subprotocol_the_local_server_picks_from_the_clients_offer_is_the_one_the_client_gets(
    tunnel: Agent, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = new_id()
    # The origin speaks chat.v2 and chat.v3: of the offer it can only pick the second entry.
    async with client.ws_connect(f"{tunnel.public_url}/s/ws?id={ident}", protocols=("chat.v1", "chat.v2")) as ws:
        assert ws.protocol == "chat.v2"
        assert (await _echo(ws, "negotiated")).data == "negotiated"
    state = await wait_for_state(client, stream_origin, ident, lambda s: "protocol" in s, 5, "the handshake")
    assert state["protocol"] == "chat.v2"


async def test_a_local_server_that_refuses_the_upgrade_gives_the_public_client_its_403(
    tunnel: Agent, open_relay: Relay, client: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"{tunnel.public_url}/s/ws-refuse")
    assert refused.value.status == 403

    handshake = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    # The local server's whole answer, read by its Content-Length: status, reason and body.
    request = build_request("GET", "/s/ws-refuse", tunnel.host, handshake)
    try:
        answer = await asyncio.wait_for(raw_request(open_relay.port, request), 5)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
        raise AssertionError(f"the refused upgrade's answer never completed ({exc!r})") from None
    assert (answer.status, answer.reason) == (403, "Forbidden")
    assert answer.body == b"no websockets for you"
    assert answer.get("Sec-WebSocket-Accept") is None
    assert answer.get("X-Relay-Error") is None, "the 403 came from the relay, not the local server"


async def test_fifty_websockets_open_at_once_each_echo_their_own_messages(
    tunnel: Agent, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ids = [new_id() for _ in range(MANY_SOCKETS)]
    all_open = asyncio.Barrier(MANY_SOCKETS)

    async def one(index: int) -> None:
        async with client.ws_connect(f"{tunnel.public_url}/s/ws?id={ids[index]}") as ws:
            await asyncio.wait_for(all_open.wait(), 20)  # every socket is open before any talks
            for turn in range(5):
                text = f"socket {index} turn {turn} " * (1 + index)
                msg = await _echo(ws, text)
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, text), (index, turn)
            data = payload(index, 1000 + index * 997)
            msg = await _echo(ws, data)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, data), index
            await asyncio.wait_for(all_open.wait(), 20)  # every socket is still open after all have talked
            await ws.close()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(MANY_SOCKETS))), 60)
    # Close codes have their own test; here every local socket must simply have been closed, not lost.
    for ident in ids:
        state = await wait_for_state(client, stream_origin, ident, lambda s: s.get("outcome") is not None, 5, "a close")
        assert state["outcome"] == "client-closed", state
