"""Relay-made answers: tunnel offline, local server down (and back), agent too slow."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import aiohttp
import pytest

from support.clients import build_request, raw_request
from support.localrelay import Origin, Relay, agent_argv, start_agent, start_origin, start_relay
from support.ports import free_port
from support.processes import ProcessGroup


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
    ],
    ids=["no-accept", "any", "json", "browser"],
)
async def test_an_offline_subdomain_answers_502_within_a_second(accept: str | None, kind: str, relay: Relay) -> None:
    name = "offline-" + secrets.token_hex(4)
    headers = [("Accept", accept)] if accept else []
    started = time.monotonic()
    response = await raw_request(relay.port, build_request("GET", "/some/page", f"{name}.localhost:{relay.port}", headers))
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"offline answer took {elapsed:.2f}s"
    assert response.status == 502
    assert response.get("X-Relay-Error") == "tunnel-offline"
    content_type = (response.get("Content-Type") or "").split(";")[0]
    if kind == "json":
        assert content_type == "application/json"
        payload = json.loads(response.body)
        assert payload["error"] == "tunnel-offline"
        assert name in payload["message"]
    else:
        assert content_type == "text/html"
        page = response.body.decode()
        assert page.lstrip().lower().startswith("<!doctype html")
        assert name in page


async def test_local_server_down_answers_502_naming_it_and_the_same_url_recovers_when_it_returns(
    processes: ProcessGroup, relay: Relay, client: aiohttp.ClientSession
) -> None:
    origin = start_origin(processes)
    agent = start_agent(processes, relay, str(origin.port), relay.token)
    async with client.get(f"{agent.public_url}/before") as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == "/before"

    origin.process.stop()
    async with client.get(f"{agent.public_url}/while-down", headers={"Accept": "application/json"}) as response:
        body = await response.text()
    assert response.status == 502
    assert response.headers["X-Relay-Error"] == "local-unreachable"
    assert f"localhost:{origin.port}" in json.loads(body)["message"]

    restarted = start_origin(processes, port=origin.port)
    async with client.get(f"{agent.public_url}/after") as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == "/after"
    assert restarted.port == origin.port
    assert agent.process.returncode is None, "the agent should have stayed up"
    assert agent.process.count(r"^Forwarding ") == 1, "the tunnel should not have been re-established"


async def test_an_origin_slower_than_the_response_timeout_gets_504(
    processes: ProcessGroup, tmp_data_dir: Path, origin: Origin, client: aiohttp.ClientSession
) -> None:
    relay = start_relay(processes, tmp_data_dir, extra=("--response-timeout", "1"))
    agent = start_agent(processes, relay, str(origin.port), relay.token)

    started = time.monotonic()
    async with client.get(f"{agent.public_url}/_o/sleep?s=3", headers={"Accept": "application/json"}) as response:
        body = await response.text()
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert response.headers["X-Relay-Error"] == "agent-timeout"
    assert json.loads(body)["error"] == "agent-timeout"
    assert 0.9 <= elapsed < 2.5, f"504 after {elapsed:.2f}s with --response-timeout 1"

    async with client.get(f"{agent.public_url}/still-works") as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == "/still-works"


def test_an_agent_exits_with_an_error_when_the_relay_is_unreachable(processes: ProcessGroup, origin: Origin) -> None:
    nobody = free_port()
    started = time.monotonic()
    agent = processes.start("agent-unreachable", agent_argv(nobody, str(origin.port), "lr_whatever"))
    code = agent.wait_exit(20)
    assert code != 0
    assert time.monotonic() - started < 20
    errors = [line for line in agent.lines["stderr"] if line.startswith("relay-client: error:")]
    assert len(errors) == 1, agent.output()
    assert str(nobody) in errors[0]
    assert "Traceback" not in agent.output()
    assert agent.count(r"^Forwarding ") == 0
