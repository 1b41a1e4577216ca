"""The inspector stays local: loopback binding, Host and Origin checks, a clear error when the port is taken."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from relay_client.inspector import (
    InspectorAddressInUse,
    InspectorServer,
    InspectorStartError,
    Recorder,
    parse_inspect_addr,
    start_inspector,
)

from .conftest import FakeHost, finished_exchange, record


async def test_a_rebinding_host_name_is_refused(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/requests/http", headers={"Host": "attacker.example:4040"}) as response:
        assert response.status == 403
        assert "localhost" in (await response.json())["msg"]
    for name in ("localhost:4040", "127.0.0.1:4040", "[::1]:4040", "inspector.localhost"):
        async with api.get("/api/tunnels", headers={"Host": name}) as response:
            assert response.status == 200, name


async def test_a_replay_posted_from_another_origin_is_refused(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    exchange = record(recorder, finished_exchange())
    async with api.post("/api/requests/http", json={"id": exchange.id}, headers={"Origin": "https://evil.example"}) as response:
        assert response.status == 403
    async with api.delete("/api/requests/http", headers={"Origin": "null"}) as response:
        assert response.status == 403
    assert len(recorder) == 1
    async with api.post("/api/requests/http", json={"id": exchange.id}, headers={"Origin": "http://127.0.0.1:4040"}) as response:
        assert response.status == 204


async def test_a_taken_port_raises_a_clear_oserror(recorder: Recorder, host: FakeHost) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InspectorAddressInUse) as caught:
            await start_inspector("127.0.0.1", port, recorder, host)
    assert isinstance(caught.value, OSError)
    message = str(caught.value)
    assert f"127.0.0.1:{port} is already in use" in message
    assert "--inspect" in message and "--no-inspect" in message and "\n" not in message


async def test_a_non_loopback_address_is_refused(recorder: Recorder, host: FakeHost) -> None:
    with pytest.raises(InspectorStartError, match="local only"):
        await start_inspector("0.0.0.0", 0, recorder, host)


async def test_the_server_reports_the_port_it_really_bound(inspector: InspectorServer) -> None:
    assert inspector.port != 0
    assert inspector.url == f"http://127.0.0.1:{inspector.port}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4040", ("127.0.0.1", 4040)),
        ("127.0.0.1:4041", ("127.0.0.1", 4041)),
        ("localhost:5000", ("localhost", 5000)),
        ("[::1]:4040", ("::1", 4040)),
    ],
)
def test_inspect_addresses_are_parsed(value: str, expected: tuple[str, int]) -> None:
    assert parse_inspect_addr(value) == expected


@pytest.mark.parametrize(
    ("value", "complaint"),
    [("0.0.0.0:4040", "local only"), ("example.com:80", "local only"), ("127.0.0.1:http", "port"), ("4040x", "HOST:PORT"), ("70000", "port")],
)
def test_bad_inspect_addresses_are_refused_with_a_reason(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_inspect_addr(value)
