"""Fixtures every test package shares: process groups stopped by PID, and ``support`` on the path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``support`` lives next to the test packages; make it importable however pytest was started.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.processes import ProcessGroup  # noqa: E402


@pytest.fixture
def processes() -> Iterator[ProcessGroup]:
    """Processes of one test; stopped by PID when it ends, pass or fail."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def module_processes() -> Iterator[ProcessGroup]:
    """Processes shared by one test module; stopped by PID at its end."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def session_processes() -> Iterator[ProcessGroup]:
    """Processes shared by the whole run; stopped by PID at its end."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()
