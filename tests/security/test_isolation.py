"""One tenant never reaches another's traffic, and an agent cannot break the relay's rules.

The agents here are ``RogueAgent``s: written by hand over a websocket with
``relay_protocol`` frames, so they can do what the real agent never would
(open streams toward the relay, send frames for streams they do not own,
answer with header injection).  Each violation ends that agent's connection
with GOAWAY(PROTOCOL_ERROR) and frees its name, and nothing leaks to a public
client or to the other tenant.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import WSMsgType, web

from relay_protocol import ErrorCode, RequestHead, ResponseHead, Role, Session
from relay_protocol.events import HelloReceived, ResponseReceived, StreamReset
from relay_protocol.frames import Flag, FrameType, encode_code_reason, encode_u32
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.session import Phase
from security.guarded_stack import origin_record, start_guard_origin
from security.rogue_agent import RogueAgent
from support.clients import RawResponse, build_request, raw_request
from support.localrelay import Relay, agent_argv, start_relay
from support.ports import LOOPBACK, free_port
from support.processes import ProcessGroup

#: Seconds a freed name may take to answer "tunnel offline".
RELEASE_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """An --open relay on *.localhost (name grace 0: a violator's name is free at once)."""
    relay = start_relay(
        module_processes,
        tmp_path_factory.mktemp("isolation-relay"),
        extra=("--open", "--name-grace", "0"),
        expect_paste_line=False,
    )
    yield relay
    assert relay.process.returncode is None, relay.process.output()
    assert "Traceback" not in relay.process.output(), relay.process.output()


@pytest.fixture
async def tenants(relay: Relay) -> AsyncIterator[tuple[RogueAgent, RogueAgent]]:
    """Two well-behaved hand-written agents, ``alpha`` and ``beta``, each answering with its own name."""
    alpha = await RogueAgent.connect(relay.port, f"alpha{time.monotonic_ns() % 10**8}")
    beta = await RogueAgent.connect(relay.port, f"beta{time.monotonic_ns() % 10**8}")
    alpha.serve()
    beta.serve()
    try:
        yield alpha, beta
    finally:
        await alpha.close()
        await beta.close()


def _host(relay: Relay, name: str) -> str:
    return f"{name}.localhost:{relay.port}"


async def _get(relay: Relay, host: str, target: str = "/who") -> RawResponse:
    return await raw_request(relay.port, build_request("GET", target, host))


async def _answered_by(relay: Relay, host: str, target: str = "/who") -> str | None:
    """Which agent answered (its name), or None when the relay itself refused."""
    response = await _get(relay, host, target)
    if response.status != 200:
        assert 400 <= response.status < 500, (response.status, response.body[:300])
        return None
    return json.loads(response.body)["agent"]


async def _wait_offline(relay: Relay, name: str) -> None:
    """Poll until the relay answers 502 tunnel-offline for ``name``."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    response = None
    while time.monotonic() < deadline:
        response = await _get(relay, _host(relay, name))
        if response.status == 502 and response.get("X-Relay-Error") == "tunnel-offline":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} still served after its agent was closed: {response}")


# ---------------------------------------------------------------- protocol violations

_HEAD = RequestHead("GET", "/", [("Host", "x.localhost")]).encode()

#: name -> (frame type, stream id, payload, flags): frames an agent must never send.
VIOLATIONS = {
    "an agent-initiated OPEN on an odd id": (FrameType.OPEN, 1, _HEAD, 0),
    "an agent-initiated OPEN on an even id": (FrameType.OPEN, 2, _HEAD, 0),
    "DATA for a stream never opened": (FrameType.DATA, 7, b"payload", 0),
    "an END_STREAM for a stream never opened": (FrameType.DATA, 9, b"", Flag.END_STREAM),
    "DATA on an even stream id the relay never uses": (FrameType.DATA, 4, b"x", 0),
    "a RESET for a stream never opened": (FrameType.RESET, 11, encode_code_reason(ErrorCode.CANCEL, "x"), 0),
    "a CREDIT for a stream never opened": (FrameType.CREDIT, 13, encode_u32(65536), 0),
    "a RESPONSE for a stream never opened": (FrameType.RESPONSE, 15, b'{"s":200,"r":"OK","h":[]}', 0),
    "a second HELLO": (FrameType.HELLO, 0, Hello(subdomain="again").encode(), 0),
    "a WELCOME sent by the agent": (FrameType.WELCOME, 0, b'{"version":1,"name":"x","public_url":"x"}', 0),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
async def test_a_frame_the_agent_may_not_send_ends_its_connection_with_a_protocol_error(case: str, relay: Relay) -> None:
    rogue = await RogueAgent.connect(relay.port, f"rogue{time.monotonic_ns() % 10**8}")
    try:
        frame_type, stream_id, payload, flags = VIOLATIONS[case]
        await rogue.send_frame(frame_type, stream_id, payload, flags)
        closure = await rogue.closed_by_relay()
    finally:
        await rogue.close()
    assert closure.goaway_code == ErrorCode.PROTOCOL_ERROR, closure
    assert rogue.ws.closed
    await _wait_offline(relay, rogue.name)


async def test_data_before_the_response_head_on_a_real_stream_is_a_protocol_error(relay: Relay) -> None:
    rogue = await RogueAgent.connect(relay.port, f"rogue{time.monotonic_ns() % 10**8}")
    try:
        request = asyncio.create_task(_get(relay, _host(relay, rogue.name)))
        opened = await rogue.next_open()
        await rogue.send_frame(FrameType.DATA, opened.stream_id, b"body before head", 0)
        closure = await rogue.closed_by_relay()
        response = await asyncio.wait_for(request, 20)
    finally:
        await rogue.close()
    assert closure.goaway_code == ErrorCode.PROTOCOL_ERROR, closure
    assert response.status == 502, response
    assert b"body before head" not in response.body


async def test_an_agent_cannot_answer_another_tenants_request(relay: Relay) -> None:
    thief = await RogueAgent.connect(relay.port, f"thief{time.monotonic_ns() % 10**8}")
    victim = await RogueAgent.connect(relay.port, f"victim{time.monotonic_ns() % 10**8}")
    try:
        request = asyncio.create_task(_get(relay, _host(relay, victim.name), "/private"))
        opened = await victim.next_open()
        assert opened.head.target == "/private"
        # The thief answers the victim's stream id on its own connection, where no such stream exists.
        await thief.send_response_payload(opened.stream_id, b'{"s":200,"r":"OK","h":["X-Stolen","yes"]}')
        await thief.send_frame(FrameType.DATA, opened.stream_id, b"stolen answer", Flag.END_STREAM)
        closure = await thief.closed_by_relay()
        assert not request.done(), f"the victim's caller got an answer before the victim sent one: {request}"
        victim.serve()
        # serve() answers the next OPEN; answer the one already received by hand.
        body = json.dumps({"agent": victim.name, "target": "/private", "host": None}).encode()
        victim.session.send_response(opened.stream_id, _ok_head(len(body)))
        victim.session.send_data(opened.stream_id, body, end_stream=True)
        await victim._flush()
        response = await asyncio.wait_for(request, 20)
    finally:
        await thief.close()
        await victim.close()
    assert closure.goaway_code == ErrorCode.PROTOCOL_ERROR, closure
    assert response.status == 200 and json.loads(response.body)["agent"] == victim.name
    assert response.get("X-Stolen") is None and b"stolen" not in response.body


def _ok_head(length: int) -> ResponseHead:
    return ResponseHead(200, "OK", [("Content-Type", "application/json"), ("Content-Length", str(length))])


# ---------------------------------------------------------------- header injection

#: Response heads a rogue agent hand-writes: a value or reason smuggling a second header line.
INJECTIONS = {
    "cr lf in a header value": b'{"s":200,"r":"OK","h":["X-Evil","a\\r\\nInjected: yes"]}',
    "bare lf in a header value": b'{"s":200,"r":"OK","h":["X-Evil","a\\nInjected: yes"]}',
    "bare cr in a header value": b'{"s":200,"r":"OK","h":["X-Evil","a\\rInjected: yes"]}',
    "nul in a header value": b'{"s":200,"r":"OK","h":["X-Evil","a\\u0000Injected: yes"]}',
    "cr lf in a header name": b'{"s":200,"r":"OK","h":["X-Evil\\r\\nInjected","yes"]}',
    "cr lf in the reason phrase": b'{"s":200,"r":"OK\\r\\nInjected: yes","h":[]}',
}


@pytest.mark.parametrize("case", list(INJECTIONS))
async def test_a_response_head_with_cr_lf_or_nul_never_reaches_the_client_as_an_injected_header(
    case: str, relay: Relay
) -> None:
    rogue = await RogueAgent.connect(relay.port, f"inject{time.monotonic_ns() % 10**8}")
    try:
        request = asyncio.create_task(_get(relay, _host(relay, rogue.name)))
        opened = await rogue.next_open()
        await rogue.send_response_payload(opened.stream_id, INJECTIONS[case])
        closure = await rogue.closed_by_relay()
        response = await asyncio.wait_for(request, 20)
    finally:
        await rogue.close()
    assert closure.goaway_code == ErrorCode.PROTOCOL_ERROR, closure
    assert response.status == 502, response
    assert response.get("Injected") is None
    assert all("injected" not in f"{k}{v}".lower() for k, v in response.headers), response.headers


# ---------------------------------------------------------------- routing by Host

@pytest.mark.parametrize(
    ("host_of", "expected"),
    [
        (lambda r, a, b: _host(r, a.name), "alpha"),
        (lambda r, a, b: _host(r, b.name), "beta"),
        (lambda r, a, b: _host(r, a.name).upper(), "alpha"),
        (lambda r, a, b: f"{a.name}.localhost.:{r.port}", "alpha"),
        (lambda r, a, b: f"{a.name}.localhost", "alpha"),
        (lambda r, a, b: f"{a.name}.{b.name}.localhost:{r.port}", None),
        (lambda r, a, b: f"{b.name}.localhost@{a.name}.localhost:{r.port}", None),
        (lambda r, a, b: f"{a.name}-{b.name}.localhost:{r.port}", "offline"),
    ],
    ids=["own host", "other host", "upper case", "trailing dot", "no port", "nested names", "userinfo", "joined names"],
)
async def test_a_public_request_reaches_only_the_agent_owning_its_host(
    host_of, expected: str | None, relay: Relay, tenants: tuple[RogueAgent, RogueAgent]
) -> None:
    alpha, beta = tenants
    host = host_of(relay, alpha, beta)
    response = await _get(relay, host)
    names = {"alpha": alpha.name, "beta": beta.name}
    if expected in names:
        assert response.status == 200, (host, response.status, response.body[:300])
        assert json.loads(response.body)["agent"] == names[expected]
    elif expected == "offline":
        assert response.status == 502 and response.get("X-Relay-Error") == "tunnel-offline", response
    else:
        assert 400 <= response.status < 500, (host, response.status, response.body[:300])
        assert b'"agent"' not in response.body


async def test_an_absolute_form_target_naming_the_other_tenant_is_refused(
    relay: Relay, tenants: tuple[RogueAgent, RogueAgent]
) -> None:
    alpha, beta = tenants
    target = f"http://{_host(relay, beta.name)}/cross"
    refused = await raw_request(relay.port, build_request("GET", target, _host(relay, alpha.name)))
    assert refused.status == 400 and refused.get("X-Relay-Error") == "host-mismatch", refused
    assert not alpha.opened and not beta.opened, "a request reached an agent"
    # The same absolute-form target with its own Host is unambiguous, and goes to its owner only.
    consistent = await raw_request(relay.port, build_request("GET", target, _host(relay, beta.name)))
    assert consistent.status == 200 and json.loads(consistent.body)["agent"] == beta.name
    assert json.loads(consistent.body)["target"] == "/cross", "absolute-form must reach the agent as a path"
    assert not alpha.opened


async def test_a_duplicated_host_header_is_refused(relay: Relay, tenants: tuple[RogueAgent, RogueAgent]) -> None:
    alpha, beta = tenants
    request = build_request("GET", "/dup", _host(relay, alpha.name), [("Host", _host(relay, beta.name))])
    response = await raw_request(relay.port, request)
    assert response.status == 400, response
    assert not alpha.opened and not beta.opened


async def test_asterisk_and_authority_form_targets_never_reach_an_agent(
    relay: Relay, tenants: tuple[RogueAgent, RogueAgent]
) -> None:
    alpha, beta = tenants
    for method, target in (("OPTIONS", "*"), ("CONNECT", _host(relay, beta.name))):
        response = await raw_request(relay.port, build_request(method, target, _host(relay, alpha.name)))
        assert 400 <= response.status < 500, (method, target, response)
    assert not alpha.opened and not beta.opened
    assert await _answered_by(relay, _host(relay, alpha.name)) == alpha.name


# ---------------------------------------------------------------- a compromised relay vs the agent


class FakeRelay:
    """A relay written by hand: accepts one real agent, then sends whatever request heads the test likes."""

    def __init__(self) -> None:
        self.connected: asyncio.Future[tuple[web.WebSocketResponse, Session]] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/_relay/connect", self._connect)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, self.port).start()

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        session = Session(Role.RELAY)
        while session.phase is not Phase.OPEN:
            msg = await ws.receive()
            assert msg.type is WSMsgType.BINARY, msg
            if any(isinstance(e, HelloReceived) for e in session.receive_data(msg.data)):
                session.accept(Welcome(1, "ssrf", f"http://ssrf.localhost:{self.port}"))
        await ws.send_bytes(session.data_to_send())
        self.connected.set_result((ws, session))
        await self.done.wait()
        return ws

    async def exchange(self, target: str, host: str) -> tuple[str, object]:
        """Open one stream; ("reset", code) or ("response", status) as the agent answered."""
        ws, session = await asyncio.wait_for(asyncio.shield(self.connected), 20)
        sid = session.open_stream(RequestHead("GET", target, [("Host", host)], "203.0.113.9"), end_stream=True)
        await ws.send_bytes(session.data_to_send())
        async with asyncio.timeout(20):
            while True:
                msg = await ws.receive()
                assert msg.type is WSMsgType.BINARY, msg
                events = session.receive_data(msg.data)
                if session.bytes_to_send:
                    await ws.send_bytes(session.data_to_send())
                for event in events:
                    if isinstance(event, StreamReset) and event.stream_id == sid:
                        return "reset", event.code
                    if isinstance(event, ResponseReceived) and event.stream_id == sid:
                        session.reset_stream(sid)
                        await ws.send_bytes(session.data_to_send())
                        return "response", event.head.status

    async def stop(self) -> None:
        self.done.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fake_relay() -> AsyncIterator[FakeRelay]:
    """A hand-written relay on 127.0.0.1."""
    relay = FakeRelay()
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def test_the_agent_forwards_only_to_its_configured_target_whatever_a_compromised_relay_sends(
    fake_relay: FakeRelay, processes: ProcessGroup
) -> None:
    target = start_guard_origin(processes)
    other = start_guard_origin(processes)  # the internal service a compromised relay would like to reach
    agent = processes.start("agent->fake-relay", agent_argv(fake_relay.port, str(target.port), None))
    await asyncio.to_thread(agent.wait_for_line, r"^Forwarding ", timeout=20)
    elsewhere = f"{LOOPBACK}:{other.port}"
    attempts = {
        "absolute-form naming another server": (f"http://{elsewhere}/upload?id=abs", elsewhere),
        "absolute-form https": (f"https://{elsewhere}/upload?id=tls", elsewhere),
        "authority-form": (elsewhere, elsewhere),
        "scheme-relative path": (f"//{elsewhere}/upload?id=slashes", elsewhere),
        "Host naming another server": ("/upload?id=host", elsewhere),
    }
    outcomes = {name: await fake_relay.exchange(t, host) for name, (t, host) in attempts.items()}
    assert outcomes["absolute-form naming another server"] == ("reset", ErrorCode.PROTOCOL_ERROR)
    assert outcomes["absolute-form https"] == ("reset", ErrorCode.PROTOCOL_ERROR)
    assert outcomes["authority-form"] == ("reset", ErrorCode.PROTOCOL_ERROR)
    # Paths, whatever they look like and whatever Host they carry, go to the configured target only.
    assert outcomes["scheme-relative path"][0] == "response"
    assert outcomes["Host naming another server"] == ("response", 200)
    assert await origin_record(target, "host") is not None
    for ident in ("abs", "tls", "slashes", "host"):
        assert await origin_record(other, ident) is None, f"{ident} reached a server other than the agent's target"
