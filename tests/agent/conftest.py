"""Fixtures for agent-feature tests: one relay and one document origin per module."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.clients import make_client  # noqa: E402
from support.localrelay import START_TIMEOUT, Origin, Relay, start_relay  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.processes import ProcessGroup  # noqa: E402

DOC_ORIGIN = Path(__file__).resolve().parent / "doc_origin.py"


@pytest.fixture(scope="module")
def group(module_processes: ProcessGroup) -> ProcessGroup:
    """Processes of one module, stopped by PID at its end."""
    return module_processes


@pytest.fixture(scope="module")
def relay(group: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    """An --open relay."""
    return start_relay(group, tmp_path_factory.mktemp("relay"), extra=("--open",), expect_paste_line=False)


@pytest.fixture(scope="module")
def doc_origin(group: ProcessGroup) -> Origin:
    """The document origin (tests/agent/doc_origin.py)."""
    port = free_port()
    process = group.start(f"doc-origin:{port}", [sys.executable, str(DOC_ORIGIN), str(port)])
    process.wait_for_line(rf"^origin listening on 127\.0\.0\.1:{port}$", timeout=START_TIMEOUT)
    return Origin(port, process)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client resolving *.localhost to loopback, never decompressing."""
    async with make_client() as session:
        yield session
