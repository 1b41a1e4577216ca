"""Fixtures for the ``relay-client check`` tests: a real relay (``--open``) and copies of the sample plugin.

Everything runs as its own process on 127.0.0.1 and is stopped by PID when
its fixture ends (``helpers`` starts plugins, MCP servers and tunnels).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# ``support`` lives next to this directory; make it importable however pytest was started.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support.localrelay import Relay, start_relay  # noqa: E402
from support.processes import ProcessGroup  # noqa: E402

from check.helpers import PLUGIN_DIR  # noqa: E402




@pytest.fixture(scope="module")
def relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    """A relay that accepts agents without a token (``--open``), as in local development."""
    return start_relay(module_processes, tmp_path_factory.mktemp("check-relay"), extra=("--open",), expect_paste_line=False)


@pytest.fixture
def plugin_files(tmp_path: Path) -> Path:
    """A copy of the sample plugin's files, for a test to break one of them."""
    target = tmp_path / "plugin"
    (target / ".well-known").mkdir(parents=True)
    shutil.copy(PLUGIN_DIR / ".well-known" / "ai-plugin.json", target / ".well-known" / "ai-plugin.json")
    shutil.copy(PLUGIN_DIR / "openapi.yaml", target / "openapi.yaml")
    shutil.copy(PLUGIN_DIR / "logo.png", target / "logo.png")
    return target
