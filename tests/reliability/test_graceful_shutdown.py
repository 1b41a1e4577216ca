"""Graceful stop and restart: GOAWAY(NO_ERROR) drains, SIGTERM on the relay, Ctrl-C on the agent.

The first tests drive the protocol (two sessions, two drivers) in memory; the
rest run real relay, agent and origin processes on 127.0.0.1 and check what a
public client sees: a request in flight during a restart completes byte for
byte, one that outlives the grace ends with an error (never a short body that
looks whole), and the agent comes back on the next relay process by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time

import aiohttp
import pytest

from relay_protocol.driver import Multiplexer, StreamError
from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.events import GoAwayReceived, PeerDraining, StreamReset
from relay_protocol.frames import FrameType, encode_code_reason, encode_frame
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.session import Phase, Role, Session
from support.localrelay import FORWARDING_LINE, get_direct
from support.payloads import sha256_hex
from support.ports import free_port
from unit.peers import connect, frames, of_type
from unit.test_driver import transport_pair

from .conftest import create_token_in, start_agent_with, start_relay_with

MIB = 1024 * 1024

#: Seconds any one wait in these tests may take (generous: two cores shared by many tests).
CEILING = 30.0


# ---------------------------------------------------------------- the protocol, in memory


def test_a_draining_relay_opens_no_new_streams_but_the_open_ones_carry_on():
    link = connect()
    sid = link.open(end_stream=True)
    link.relay.drain("relay shutting down")
    assert link.to_agent() == [PeerDraining("relay shutting down")]
    assert link.agent.phase is Phase.OPEN and link.agent.peer_draining
    with pytest.raises(LocalProtocolError) as info:
        link.relay.open_stream(RequestHead("GET", "/new"))
    assert info.value.code is ErrorCode.GOING_AWAY
    link.agent.send_response(sid, ResponseHead(200, "OK"))
    link.agent.send_data(sid, b"still flowing", end_stream=True)
    events = link.to_relay()
    assert [type(e).__name__ for e in events] == ["ResponseReceived", "DataReceived"]
    assert bytes(events[1].data) == b"still flowing" and events[1].end_stream


def test_an_open_that_crosses_the_agents_drain_is_refused_with_refused_stream():
    link = connect()
    link.agent.drain("agent stopping")
    link.relay.open_stream(RequestHead("GET", "/late"), end_stream=True)  # already on the wire
    assert link.to_agent() == []  # the agent never sees it as a request
    (reset,) = of_type(frames(link.agent.data_to_send()), FrameType.RESET)
    events = link.relay.receive_data(encode_frame(FrameType.RESET, 0, reset.stream_id, reset.payload))
    assert [e for e in events if isinstance(e, StreamReset)][0].code is ErrorCode.REFUSED_STREAM


def test_a_relay_told_the_agent_is_draining_opens_no_new_streams():
    link = connect()
    link.agent.drain("agent stopping")
    assert link.to_relay() == [PeerDraining("agent stopping")]
    with pytest.raises(LocalProtocolError):
        link.relay.open_stream(RequestHead("GET", "/"))


def test_a_drain_is_said_once_and_a_closing_goaway_still_ends_the_session():
    link = connect()
    link.relay.drain("one")
    link.relay.drain("two")
    assert link.to_agent() == [PeerDraining("one")]
    link.relay.goaway(ErrorCode.GOING_AWAY, "now")
    assert link.to_agent() == [GoAwayReceived(ErrorCode.GOING_AWAY, "now")]
    assert link.agent.phase is Phase.CLOSED


def test_goaway_no_error_during_the_handshake_still_ends_it():
    relay, agent = Session(Role.RELAY), Session(Role.AGENT)
    relay.drain("not yet open")  # nothing to drain before the handshake: says nothing
    assert relay.data_to_send() == b""
    events = agent.receive_data(encode_frame(FrameType.GOAWAY, 0, 0, encode_code_reason(ErrorCode.NO_ERROR, "bye")))
    assert events == [GoAwayReceived(ErrorCode.NO_ERROR, "bye")] and agent.phase is Phase.CLOSED


async def _pair():
    link = connect()
    relay_transport, agent_transport = transport_pair()
    accepted: asyncio.Queue = asyncio.Queue()
    relay = Multiplexer(link.relay, relay_transport)
    agent = Multiplexer(link.agent, agent_transport, accepted.put_nowait)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(agent.run())]
    return relay, agent, accepted, tasks


async def test_a_draining_connection_closes_by_itself_once_its_last_stream_is_done():
    relay, agent, accepted, tasks = await _pair()
    told: list[str] = []
    agent.on_peer_draining = told.append
    stream = relay.open_stream(RequestHead("GET", "/big"), end_stream=True)
    served = await asyncio.wait_for(accepted.get(), 2)
    relay.drain("relay shutting down")
    await asyncio.sleep(0.05)
    assert told == ["relay shutting down"] and not agent.closed and not relay.closed
    served.send_response(ResponseHead(200, "OK"))
    body = b"x" * (3 * 64 * 1024)  # more than one window: needs credit while draining
    writer = asyncio.create_task(served.write(body, end=True))
    head = await asyncio.wait_for(stream.response, 2)
    received = bytearray()
    while chunk := await asyncio.wait_for(stream.read(), 2):
        received += chunk
    await asyncio.wait_for(writer, 2)
    assert head.status == 200 and bytes(received) == body
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert relay.closed and agent.closed
    assert agent.close_code is ErrorCode.GOING_AWAY or relay.close_code is ErrorCode.GOING_AWAY


async def test_closing_a_draining_connection_cuts_its_streams_with_an_error():
    relay, agent, accepted, tasks = await _pair()
    stream = relay.open_stream(RequestHead("GET", "/slow"), end_stream=True)
    await asyncio.wait_for(accepted.get(), 2)
    relay.drain("relay shutting down")
    await asyncio.sleep(0.05)
    relay.close(ErrorCode.GOING_AWAY, "grace period over")
    with pytest.raises(StreamError) as info:
        await asyncio.wait_for(stream.response, 2)
    assert info.value.code is ErrorCode.GOING_AWAY
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_an_idle_connection_told_to_drain_closes_at_once():
    relay, agent, _, tasks = await _pair()
    agent.drain("agent stopping")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert relay.peer_draining and agent.close_code is ErrorCode.GOING_AWAY


# ---------------------------------------------------------------- real processes


async def _read_exactly(response: aiohttp.ClientResponse, n: int, digest) -> int:
    got = 0
    while got < n:
        chunk = await response.content.read(min(MIB, n - got))
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
    return got


async def _status(client: aiohttp.ClientSession, url: str, host: str | None = None) -> tuple[int, str]:
    async with client.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        await response.read()
        return response.status, response.headers.get("X-Relay-Error", "")


async def _until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if await predicate():
                return
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{message} not reached within {timeout:g}s (last: {last!r})")


async def test_a_download_in_flight_at_sigterm_completes_whole_and_the_agent_moves_to_the_next_relay_process(
    processes, data_dir, origin, client
):
    size, seed = 120 * MIB, 5
    token = create_token_in(data_dir)
    port = free_port()
    old = start_relay_with(processes, data_dir, port=port, extra=("--shutdown-grace", "90"))
    agent = start_agent_with(processes, port, str(origin.port), token, "survivor")
    digest = hashlib.sha256()
    async with client.get(f"{agent.public_url}/_o/download?size={size}&seed={seed}") as response:
        assert response.status == 200 and response.content_length == size
        got = await _read_exactly(response, 8 * MIB, digest)
        assert got == 8 * MIB
        # SIGTERM while the body is in flight (and we are not even reading it).
        mark = agent.process.mark()
        old.process.signal(signal.SIGTERM)
        await asyncio.to_thread(
            old.process.wait_for_line, r"stopping: listeners closed", stream="stderr", timeout=CEILING
        )
        # A new process takes the same port at once, and the agent comes back on it, same name.
        new = await asyncio.to_thread(start_relay_with, processes, data_dir, port=port)
        line = await asyncio.to_thread(agent.process.wait_for_line, FORWARDING_LINE, timeout=CEILING, after=mark)
        assert line.group(1) == agent.public_url
        status, _ = await asyncio.to_thread(get_direct, port, "/", agent.host, 10.0)
        assert status == 200, "the same URL answers through the new relay process"
        assert old.process.returncode is None, "the old relay waits for the download in flight"
        assert new.process.returncode is None
        # Now read the rest, slowly at first.
        for _ in range(8):
            got += await _read_exactly(response, MIB, digest)
            await asyncio.sleep(0.05)
        got += await _read_exactly(response, size - got, digest)
        assert await response.content.read() == b""
    assert got == size
    assert digest.hexdigest() == sha256_hex(seed, size)
    assert await asyncio.to_thread(old.process.wait_exit, CEILING) == 0
    assert "Traceback" not in old.process.output()
    assert agent.process.returncode is None


async def test_requests_that_outlive_the_grace_end_with_an_error_and_the_relay_exits_by_itself(
    processes, data_dir, origin, client
):
    grace = 2.0
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, extra=("--shutdown-grace", str(grace)))
    agent = start_agent_with(processes, relay.port, str(origin.port), token, "outlived")
    size = 64 * MIB
    async with client.get(f"{agent.public_url}/_o/drip?id=never") as stream_response, client.get(
        f"{agent.public_url}/_o/download?size={size}&seed=3"
    ) as download:
        assert stream_response.status == 200 and download.status == 200
        assert await asyncio.wait_for(stream_response.content.readline(), CEILING) == b'{"part":"first"}\n'
        got = await _read_exactly(download, MIB, hashlib.sha256())
        started = time.monotonic()
        relay.process.signal(signal.SIGTERM)
        code = await asyncio.to_thread(relay.process.wait_exit, grace + CEILING)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < grace + 10, f"the relay took {elapsed:.1f}s to exit with a grace of {grace:g}s"
        # Neither body may look complete: the chunked one lacks its last chunk, the other its length.
        with pytest.raises(aiohttp.ClientError):
            while await asyncio.wait_for(stream_response.content.read(65536), CEILING):
                pass
        with pytest.raises(aiohttp.ClientError):
            while chunk := await asyncio.wait_for(download.content.read(MIB), CEILING):
                got += len(chunk)
        assert got < size
    assert "Traceback" not in relay.process.output()


async def test_a_second_sigterm_cuts_the_relays_grace_short(processes, data_dir, origin, client):
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, extra=("--shutdown-grace", "60"))
    agent = start_agent_with(processes, relay.port, str(origin.port), token, "impatient")
    async with client.get(f"{agent.public_url}/_o/drip?id=impatient") as in_flight:
        assert await asyncio.wait_for(in_flight.content.readline(), CEILING) == b'{"part":"first"}\n'
        relay.process.signal(signal.SIGTERM)
        await asyncio.to_thread(
            relay.process.wait_for_line, r"stopping: listeners closed", stream="stderr", timeout=CEILING
        )
        started = time.monotonic()
        relay.process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(relay.process.wait_exit, CEILING) == 0
        assert time.monotonic() - started < 10
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(in_flight.content.read(), CEILING)


async def _health_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, dict]:
    """GET /_relay/health on an open keep-alive connection: status and JSON body."""
    import json

    writer.write(b"GET /_relay/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), CEILING)
    return int(lines[0].split()[1]), json.loads(body)


async def test_health_asked_on_a_kept_alive_connection_says_stopping_once_the_relay_drains(
    processes, data_dir, origin, client
):
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir, extra=("--shutdown-grace", "60"))
    agent = start_agent_with(processes, relay.port, str(origin.port), token, "rotation")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        status, health = await _health_on(reader, writer)
        assert (status, health["status"], health["tunnels"]) == (200, "ok", 1)
        async with client.get(f"{agent.public_url}/_o/drip?id=rotation") as in_flight:  # keeps the relay draining
            assert await asyncio.wait_for(in_flight.content.readline(), CEILING) == b'{"part":"first"}\n'
            relay.process.signal(signal.SIGTERM)
            await asyncio.to_thread(
                relay.process.wait_for_line, r"stopping: listeners closed", stream="stderr", timeout=CEILING
            )
            status, health = await _health_on(reader, writer)
            assert (status, health["status"]) == (503, "stopping")  # a balancer takes the node out of rotation
            relay.process.signal(signal.SIGTERM)  # no need to wait out the grace
            assert await asyncio.to_thread(relay.process.wait_exit, CEILING) == 0
    finally:
        writer.close()


async def test_agent_ctrl_c_refuses_new_requests_at_once_and_lets_the_one_in_flight_finish(
    processes, data_dir, origin, client
):
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir)
    agent = start_agent_with(processes, relay.port, str(origin.port), token, "polite", extra=("--shutdown-grace", "60"))
    async with client.get(f"{agent.public_url}/_o/drip?id=polite") as in_flight:
        assert await asyncio.wait_for(in_flight.content.readline(), CEILING) == b'{"part":"first"}\n'
        agent.process.signal(signal.SIGINT)

        async def refused() -> bool:
            status, error = await _status(client, f"{agent.public_url}/new")
            return status == 502 and error == "tunnel-offline"

        await _until(refused, CEILING, "new requests answered 502 tunnel-offline")
        assert agent.process.returncode is None, "the agent waits for the request in flight"
        status, _ = await asyncio.to_thread(get_direct, origin.port, "/_o/release?id=polite")
        assert status == 200
        rest = await asyncio.wait_for(in_flight.content.read(), CEILING)
        assert rest == b'{"part":"second"}\n'
    assert await asyncio.to_thread(agent.process.wait_exit, CEILING) == 0
    assert "Traceback" not in agent.process.output()


async def test_a_second_ctrl_c_stops_the_agent_at_once_and_the_cut_request_ends_with_an_error(
    processes, data_dir, origin, client
):
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir)
    agent = start_agent_with(processes, relay.port, str(origin.port), token, "hasty", extra=("--shutdown-grace", "60"))
    async with client.get(f"{agent.public_url}/_o/drip?id=hasty") as in_flight:
        assert await asyncio.wait_for(in_flight.content.readline(), CEILING) == b'{"part":"first"}\n'
        mark = agent.process.mark("stderr")
        agent.process.signal(signal.SIGINT)
        await asyncio.to_thread(
            agent.process.wait_for_line, r"stopping: waiting up to 60s for 1 request", stream="stderr",
            timeout=CEILING, after=mark,
        )
        started = time.monotonic()
        agent.process.signal(signal.SIGINT)
        assert await asyncio.to_thread(agent.process.wait_exit, CEILING) == 0
        assert time.monotonic() - started < 10, "a second Ctrl-C does not wait for the grace"
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(in_flight.content.read(), CEILING)
    assert "Traceback" not in agent.process.output()


async def test_the_agent_cuts_requests_that_outlive_its_grace_and_exits(processes, data_dir, origin, client):
    token = create_token_in(data_dir)
    relay = start_relay_with(processes, data_dir)
    agent = start_agent_with(processes, relay.port, str(origin.port), token, "patient", extra=("--shutdown-grace", "1"))
    async with client.get(f"{agent.public_url}/_o/drip?id=patient") as in_flight:
        assert await asyncio.wait_for(in_flight.content.readline(), CEILING) == b'{"part":"first"}\n'
        started = time.monotonic()
        agent.process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(agent.process.wait_exit, CEILING) == 0
        assert time.monotonic() - started < 1 + 10
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(in_flight.content.read(), CEILING)


# ---------------------------------------------------------------- deploy files


def test_the_service_managers_wait_longer_than_the_relays_shutdown_grace():
    import re

    import yaml

    from relay_server.config import SHUTDOWN_GRACE
    from relay_server.serve import SHUTDOWN_TAIL
    from support.processes import REPO_ROOT

    needed = SHUTDOWN_GRACE + SHUTDOWN_TAIL
    unit = (REPO_ROOT / "deploy" / "relay-server.service").read_text()
    (systemd,) = re.findall(r"^TimeoutStopSec=(\d+)s$", unit, re.MULTILINE)
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text())
    grace_period = compose["services"]["relay"]["stop_grace_period"]
    assert grace_period.endswith("s")
    assert int(systemd) > needed and int(grace_period[:-1]) > needed
