"""The running relay and agent carry only what running needs (issue 3's memory target).

``relay-server serve`` and ``relay-client http`` parse their options with typer (which
loads pydantic), then exec a fresh interpreter for the long-running part, same PID; TLS
(cryptography) loads only with an HTTPS option, the inspector and Prometheus client only
with the inspector on.  These tests look at the shared test processes (plain HTTP relay,
agent with --no-inspect) through /proc and check the tunnel still answers.  The agent's
aiohttp (websocket upgrades, replay) loading only on first use is tested in
``tests/streaming/test_lazy_aiohttp.py`` with an agent of its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aiohttp
import pytest
from support.localrelay import Agent, Relay

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_the_relay_runs_in_a_fresh_interpreter_without_pydantic_or_cryptography(relay: Relay) -> None:
    maps = _mapped_files(relay.process.pid)
    assert "relay_server.serve_main" in _cmdline(relay.process.pid)
    assert "pydantic_core" not in maps
    assert "cryptography" not in maps
    assert "aiohttp" in maps  # the check reads the right process: it does map its own extensions


def test_the_agent_runs_in_a_fresh_interpreter_without_pydantic_or_the_inspector(agent: Agent) -> None:
    maps = _mapped_files(agent.process.pid)
    assert "relay_client.agent_main" in _cmdline(agent.process.pid)
    assert "pydantic_core" not in maps
    assert "httptools" in maps  # the check reads the right process: its local pool's parser is mapped


async def test_the_relaunched_processes_still_forward_a_request(agent: Agent, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{agent.public_url}/lean/check?x=1") as response:
        assert response.status == 200
        described = json.loads(await response.read())
    assert "/lean/check?x=1" in json.dumps(described)
