"""Fixtures for the streaming tests: real relay, agent and origin processes on 127.0.0.1.

Two relays are shared by the whole package, both ``--open`` and both behind the
one streaming origin (``stream_origin.py``):

- ``tunnel``: default limits, so many streams and big bodies fit;
- ``limited_tunnel``: ``--max-streams 5`` and small URL/header limits, for the
  tests about refusals and about streams being released.

Every process is stopped by its PID when the package is done.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

# ``support`` and this package live in tests/; make them importable however pytest was started.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from streaming.tools import MAX_HEADER_BYTES, MAX_STREAMS, MAX_URL_BYTES  # noqa: E402
from support.clients import make_client  # noqa: E402
from support.localrelay import START_TIMEOUT, Agent, Origin, Relay, start_agent, start_relay  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.processes import ProcessGroup  # noqa: E402

ORIGIN_SCRIPT = Path(__file__).resolve().parent / "stream_origin.py"

#: Seconds the shared relay waits for a response head: short, so a relay that
#: applied it to whole exchanges would cut the long streams the tests hold open.
RESPONSE_TIMEOUT = 5


@pytest.fixture(scope="package")
def streaming_processes() -> Iterator[ProcessGroup]:
    """Processes shared by the streaming tests; stopped by PID at the end."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


@dataclass
class Stack:
    """The shared processes: one origin behind two relays, each with its agent."""

    origin: Origin
    open_relay: Relay
    tunnel: Agent
    limited_relay: Relay
    limited_tunnel: Agent


def _start_origin(group: ProcessGroup) -> Origin:
    port = free_port()
    process = group.start(f"stream-origin:{port}", [sys.executable, str(ORIGIN_SCRIPT), "--port", str(port)])
    process.wait_for_line(rf"^origin listening on 127\.0\.0\.1:{port}$", timeout=START_TIMEOUT)
    return Origin(port, process)


@pytest.fixture(scope="package")
def stack(streaming_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """Start the origin and both relays side by side, then both agents (startup is mostly imports)."""
    open_extra = ("--open", "--response-timeout", str(RESPONSE_TIMEOUT))
    limited_extra = (
        "--open",
        "--max-streams", str(MAX_STREAMS),
        "--max-url-bytes", str(MAX_URL_BYTES),
        "--max-header-bytes", str(MAX_HEADER_BYTES),
    )
    with ThreadPoolExecutor(max_workers=3) as pool:
        origin = pool.submit(_start_origin, streaming_processes)
        open_relay = pool.submit(
            start_relay, streaming_processes, tmp_path_factory.mktemp("stream-relay"),
            extra=open_extra, expect_paste_line=False,
        )
        limited_relay = pool.submit(
            start_relay, streaming_processes, tmp_path_factory.mktemp("limited-relay"),
            extra=limited_extra, expect_paste_line=False,
        )
        origin_port = str(origin.result().port)
        tunnel = pool.submit(start_agent, streaming_processes, open_relay.result(), origin_port, None, "stream")
        limited_tunnel = pool.submit(
            start_agent, streaming_processes, limited_relay.result(), origin_port, None, "limited"
        )
        return Stack(
            origin.result(), open_relay.result(), tunnel.result(), limited_relay.result(), limited_tunnel.result()
        )


def _check_alive(stack: Stack) -> None:
    for process in (stack.origin.process, stack.open_relay.process, stack.tunnel.process,
                    stack.limited_relay.process, stack.limited_tunnel.process):
        assert process.returncode is None, f"a shared process died\n{process.output()}"


@pytest.fixture
def stream_origin(stack: Stack) -> Origin:
    """The streaming origin server (its own process)."""
    _check_alive(stack)
    return stack.origin


@pytest.fixture
def open_relay(stack: Stack) -> Relay:
    """The relay with default stream limits and windows."""
    _check_alive(stack)
    return stack.open_relay


@pytest.fixture
def tunnel(stack: Stack) -> Agent:
    """``stream.localhost`` on the default relay, checked to be alive (a crash is reported where it happened)."""
    _check_alive(stack)
    return stack.tunnel


@pytest.fixture
def limited_relay(stack: Stack) -> Relay:
    """The relay with small per-tunnel stream, URL and header limits."""
    _check_alive(stack)
    return stack.limited_relay


@pytest.fixture
def limited_tunnel(stack: Stack) -> Agent:
    """``limited.localhost`` on the limited relay."""
    _check_alive(stack)
    return stack.limited_tunnel


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that resolves *.localhost to 127.0.0.1 and never decompresses."""
    async with make_client() as session:
        yield session
