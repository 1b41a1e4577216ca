"""Fixtures for the fault tests: each test starts (and kills) its own relay, agent and origin processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# ``support`` lives next to this directory; make it importable however pytest was started.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    """An empty data dir for the test's own relay."""
    path = tmp_path / "relay-data"
    path.mkdir()
    return path
