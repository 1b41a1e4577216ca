"""The agent loads aiohttp's client only for what needs it (a websocket upgrade, a replay).

Plain requests go through the agent's own keep-alive pool, so an agent with
``--no-inspect`` that only forwards plain requests never imports aiohttp, about
10 MiB resident less (part of issue 3's memory target).  These tests run their
own agent process and read its mapped files in /proc: aiohttp's C extensions
appear there once it is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest

from streaming.tools import new_id
from support.clients import build_request, raw_request
from support.localrelay import Origin, Relay, start_agent
from support.ports import free_port
from support.processes import ProcessGroup

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: Seconds a websocket message or an answer may take.
TIMEOUT = 5.0


def _maps_aiohttp(pid: int) -> bool:
    return "/aiohttp/" in Path(f"/proc/{pid}/maps").read_text()


async def test_plain_requests_leave_aiohttp_unloaded_and_a_websocket_loads_it(
    processes: ProcessGroup, open_relay: Relay, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    agent = start_agent(processes, open_relay, str(stream_origin.port), None, f"lazy{new_id()}")
    pid = agent.process.pid
    for _ in range(3):
        async with client.get(f"{agent.public_url}/_o/bytes?n=70000") as response:
            assert response.status == 200
            assert len(await response.read()) == 70000
    assert not _maps_aiohttp(pid), "the agent imported aiohttp for plain requests"

    async with client.ws_connect(f"{agent.public_url}/s/ws?id={new_id()}") as ws:
        await ws.send_str("first websocket")
        msg = await ws.receive(timeout=TIMEOUT)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "first websocket")
    assert _maps_aiohttp(pid), "the check reads the wrong process: the websocket needed aiohttp"


async def test_a_websocket_to_a_dead_local_server_gets_the_unreachable_answer(
    processes: ProcessGroup, open_relay: Relay, client: aiohttp.ClientSession
) -> None:
    dead = free_port()  # nothing listens there
    agent = start_agent(processes, open_relay, str(dead), None, f"lazydead{new_id()}")
    upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Accept", "text/plain"),
    ]
    answer = await raw_request(open_relay.port, build_request("GET", "/ws", agent.host, upgrade))
    assert answer.status == 502
    assert answer.get("X-Relay-Error") == "local-unreachable"
    text = answer.body.decode()
    # Worded as for a plain request (the errno's text), not as aiohttp's "Multiple exceptions: ...".
    message = f"could not reach the local server at http://localhost:{dead}: Connection refused. Is it running?"
    assert message in text, text
