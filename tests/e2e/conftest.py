"""Fixtures for the end-to-end tests: real relay, agent and origin processes on 127.0.0.1.

Shared (session) processes: one relay started on an empty data dir (so it
prints its first-start token), one origin, and one agent forwarding to it.
Tests that kill, restart or misconfigure things start their own through the
function-scoped ``processes`` group, which stops everything it started.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

# ``support`` lives next to this directory; make it importable however pytest was started.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.clients import make_client  # noqa: E402
from support.localrelay import Agent, Origin, Relay, start_agent, start_origin, start_relay  # noqa: E402
from support.processes import ProcessGroup  # noqa: E402




@pytest.fixture(scope="session")
def relay(session_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    """The shared relay (token required), started on an empty data dir."""
    return start_relay(session_processes, tmp_path_factory.mktemp("relay-data"))


@pytest.fixture(scope="session")
def origin(session_processes: ProcessGroup) -> Origin:
    """The shared origin server."""
    return start_origin(session_processes)


@pytest.fixture(scope="session")
def shared_agent(session_processes: ProcessGroup, relay: Relay, origin: Origin) -> Agent:
    """The shared agent: ``relay-client http ORIGIN_PORT`` with the first-start token."""
    return start_agent(session_processes, relay, str(origin.port), relay.token)


@pytest.fixture
def agent(shared_agent: Agent, relay: Relay, origin: Origin) -> Agent:
    """The shared agent, checked to be still alive (so a crash is reported where it happened)."""
    for process in (relay.process, origin.process, shared_agent.process):
        assert process.returncode is None, f"a shared process died\n{process.output()}"
    return shared_agent


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that resolves *.localhost to 127.0.0.1 and never decompresses."""
    async with make_client() as session:
        yield session


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    """An empty data dir for a dedicated relay."""
    path = tmp_path / "relay-data"
    path.mkdir()
    return path
