"""Helpers for the reliability tests: relays and agents with test knobs (short heartbeats), real processes.

Everything runs on 127.0.0.1 through the product's outside (command lines,
printed lines, HTTP); every process is stopped by PID when its test ends.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.clients import make_client  # noqa: E402
from support.localrelay import (  # noqa: E402
    FORWARDING_LINE,
    START_TIMEOUT,
    Origin,
    Relay,
    agent_argv,
    get_direct,
    start_origin,
    wait_until,
)
from support.ports import free_port  # noqa: E402
from support.processes import ManagedProcess, ProcessExited, ProcessGroup, child_env, python_module  # noqa: E402

#: Heartbeat used where a test needs a dead peer noticed fast (seconds, both sides).
FAST_HEARTBEAT = "1"


@dataclass
class RunningAgent:
    """An agent process whose tunnel is up."""

    process: ManagedProcess
    public_url: str
    name: str

    @property
    def host(self) -> str:
        """The Host header of public requests to this tunnel."""
        return self.public_url.removeprefix("http://")


def start_relay_with(
    group: ProcessGroup,
    data_dir: Path,
    *,
    port: int | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Relay:
    """``relay-server serve`` on 127.0.0.1 with extra options and environment; wait for health."""
    port = port or free_port()
    argv = python_module(
        "relay_server", "serve", "--host", "127.0.0.1", "--http-port", str(port), "--data-dir", str(data_dir), *extra
    )
    process = group.start(f"relay:{port}", argv, child_env(env))

    def healthy() -> bool:
        if process.returncode is not None:
            raise ProcessExited(f"relay exited before it was healthy\n{process.output()}")
        status, _ = get_direct(port, "/_relay/health", host=f"localhost:{port}", timeout=1.0)
        return status == 200

    wait_until(healthy, START_TIMEOUT, message=f"relay on port {port} healthy")
    return Relay(port, data_dir, process, None, None)


def start_agent_with(
    group: ProcessGroup,
    server_port: int,
    target: str,
    token: str | None,
    subdomain: str | None = None,
    *,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> RunningAgent:
    """``relay-client http`` against ``server_port`` (a relay or a proxy); wait for its Forwarding line."""
    process = group.start(f"agent->{target}", agent_argv(server_port, target, token, subdomain, extra), child_env(env))
    match = process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
    return RunningAgent(process, match.group(1), match.group(2))


def create_token_in(data_dir: Path) -> str:
    """A fresh agent token in ``data_dir`` (``relay-server token create``)."""
    from support.localrelay import create_token

    return create_token(data_dir)


@pytest.fixture
def origin(processes: ProcessGroup) -> Origin:
    """An origin server of this test."""
    return start_origin(processes)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty relay data dir."""
    path = tmp_path / "relay-data"
    path.mkdir()
    return path


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that resolves *.localhost to 127.0.0.1 and never decompresses."""
    async with make_client() as session:
        yield session
