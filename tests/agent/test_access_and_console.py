"""--basic-auth and --allow-ip (enforced at the relay), and the agent's console lines."""

from __future__ import annotations

import json

import aiohttp
import pytest

from support.localrelay import Origin, Relay, start_agent
from support.processes import ProcessGroup


async def test_basic_auth_is_demanded_by_the_relay_and_the_password_never_reaches_the_local_server(
    group: ProcessGroup, relay: Relay, doc_origin: Origin, client: aiohttp.ClientSession
) -> None:
    agent = start_agent(group, relay, str(doc_origin.port), None, "locked", extra=("--basic-auth", "bob:s3cret"))
    async with client.get(f"{agent.public_url}/host") as response:
        assert response.status == 401
        assert response.headers["X-Relay-Error"] == "auth-required"
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="localrelay tunnel locked"')
    async with client.get(f"{agent.public_url}/host", headers={"Authorization": aiohttp.encode_basic_auth("bob", "wrong")}) as response:
        assert response.status == 401
    async with client.get(f"{agent.public_url}/host", headers={"Authorization": aiohttp.encode_basic_auth("bob", "s3cret")}) as response:
        assert response.status == 200
        assert (await response.json())["auth"] is None  # the tunnel's credentials stay at the relay
    # A browser's CORS preflight never carries credentials: it must still get through.
    preflight = {"Origin": "https://chat.openai.com", "Access-Control-Request-Method": "GET"}
    async with client.options(f"{agent.public_url}/plain", headers=preflight) as response:
        assert response.status == 200 and await response.text() == "plain"
    # Only a hash of the credentials travelled: the relay's log never shows them.
    assert "s3cret" not in relay.process.output()


@pytest.mark.parametrize(
    ("cidrs", "allowed"),
    [(("127.0.0.0/8",), True), (("10.0.0.0/8", "::1/128"), False), (("10.0.0.0/8", "127.0.0.1/32"), True)],
)
async def test_allow_ip_lets_only_listed_client_addresses_through(
    group: ProcessGroup, relay: Relay, doc_origin: Origin, client: aiohttp.ClientSession, cidrs: tuple[str, ...], allowed: bool
) -> None:
    extra: tuple[str, ...] = ()
    for cidr in cidrs:
        extra += ("--allow-ip", cidr)
    agent = start_agent(group, relay, str(doc_origin.port), None, None, extra=extra)
    async with client.get(f"{agent.public_url}/plain") as response:
        if allowed:
            assert response.status == 200 and await response.text() == "plain"
        else:
            assert response.status == 403
            assert response.headers["X-Relay-Error"] == "ip-not-allowed"
            assert "127.0.0.1" in (await response.json())["message"]


def test_bad_access_options_are_refused_before_connecting(group: ProcessGroup, relay: Relay) -> None:
    for extra in (("--basic-auth", "no-colon"), ("--allow-ip", "300.1.2.3/8")):
        from support.localrelay import agent_argv

        process = group.start("bad-agent", agent_argv(relay.port, "3000", None, None, extra))
        assert process.wait_exit(10) == 2
        assert any(line.startswith("relay-client: error:") for line in process.lines["stderr"]), process.output()


async def test_console_prints_one_line_per_request_and_json_lines_with_log_format_json(
    group: ProcessGroup, relay: Relay, doc_origin: Origin, client: aiohttp.ClientSession
) -> None:
    text_agent = start_agent(group, relay, str(doc_origin.port), None, "logtext")
    async with client.post(f"{text_agent.public_url}/plain?x=1", data=b"12345") as response:
        assert response.status == 200
    line = text_agent.process.wait_for_line(r"POST\s+/plain\?x=1\s+200\s", timeout=5)
    assert line.group(0)

    json_agent = start_agent(group, relay, str(doc_origin.port), None, "logjson", extra=("--log-format", "json"))
    async with client.post(f"{json_agent.public_url}/plain", data=b"12345") as response:
        assert response.status == 200
    match = json_agent.process.wait_for_line(r'^\{.*"path": "/plain"', timeout=5)
    record = json.loads(match.string)
    assert record["method"] == "POST" and record["status"] == 200
    assert record["bytes_in"] == 5 and record["bytes_out"] == 5
    assert record["duration_ms"] >= 0
