"""Fixtures for the metrics and log tests: real relay, agent and origin processes on 127.0.0.1."""

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
from support.localrelay import Origin, start_origin  # noqa: E402
from support.processes import ProcessGroup  # noqa: E402


@pytest.fixture(scope="module")
def origin(module_processes: ProcessGroup) -> Origin:
    """The origin server of one test module."""
    return start_origin(module_processes)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that resolves *.localhost to 127.0.0.1 and never decompresses."""
    async with make_client() as session:
        yield session
