"""A response body never runs past the Content-Length its agent declared.

A relayed response whose body has fully arrived leaves in one write; that write
must still stop at the declared length, or a rogue agent could append a second
response to a public client's keep-alive connection (response splitting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from relay_protocol import ResponseHead
from relay_protocol.frames import Flag, FrameType, encode_frame
from security.rogue_agent import RogueAgent
from support.clients import build_request, raw_request
from support.localrelay import Relay, start_relay
from support.processes import ProcessGroup

SPLIT = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"


@pytest.fixture(scope="module")
def relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """An --open relay on *.localhost."""
    relay = start_relay(
        module_processes, tmp_path_factory.mktemp("length-relay"), extra=("--open",), expect_paste_line=False
    )
    yield relay
    assert "Traceback" not in relay.process.output(), relay.process.output()


@pytest.mark.parametrize("same_message", [True, False], ids=["body with the head", "body after the head"])
async def test_bytes_past_the_declared_content_length_never_reach_the_client(relay: Relay, same_message: bool) -> None:
    rogue = await RogueAgent.connect(relay.port, f"long{time.monotonic_ns() % 10**8}")
    try:
        host = f"{rogue.name}.localhost:{relay.port}"
        request = asyncio.create_task(raw_request(relay.port, build_request("GET", "/x", host), until_eof=True))
        opened = await rogue.next_open()
        head = ResponseHead(200, "OK", [("Content-Type", "text/plain"), ("Content-Length", "5")]).encode()
        response_frame = encode_frame(FrameType.RESPONSE, 0, opened.stream_id, head)
        data_frame = encode_frame(FrameType.DATA, Flag.END_STREAM, opened.stream_id, b"hello" + SPLIT)
        if same_message:
            await rogue.ws.send_bytes(response_frame + data_frame)
        else:
            await rogue.ws.send_bytes(response_frame)
            await asyncio.sleep(0.2)
            await rogue.ws.send_bytes(data_frame)
        response = await asyncio.wait_for(request, 20)
    finally:
        await rogue.close()
    assert response.status == 200 and response.body == b"hello", response
    assert response.trailing == b"", response.trailing
