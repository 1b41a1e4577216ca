"""``relay_protocol.relaunch``: the payload reaches the new interpreter, in the same process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay_protocol import relaunch

pytestmark = pytest.mark.skipif(os.name != "posix", reason="exec-based")

CHILD = """
import os, sys
from relay_protocol.relaunch import receive
payload = receive("usage: test")
print("child", os.getpid(), repr(payload), sys.argv[1:], flush=True)
"""

PARENT = """
import os, sys
from relay_protocol import relaunch
print("parent", os.getpid(), flush=True)
if sys.argv[1] == "allowed":
    relaunch.allow()
relaunch.relaunch("relaunch_child", {"answer": 42, "path": "/tmp/x"})
print("in place", flush=True)
"""


def _run(tmp_path: Path, mode: str, env_extra: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "relaunch_child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != relaunch.DISABLE_ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), **(env_extra or {}))
    result = subprocess.run(
        [sys.executable, "-c", PARENT, mode], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_an_allowed_relaunch_runs_the_module_in_the_same_process_with_the_payload(tmp_path: Path) -> None:
    lines = _run(tmp_path, "allowed")
    assert len(lines) == 2, lines
    parent_pid = lines[0].split()[1]
    assert lines[1] == f"child {parent_pid} {{'answer': 42, 'path': '/tmp/x'}} []"


def test_without_allow_the_caller_runs_in_place(tmp_path: Path) -> None:
    lines = _run(tmp_path, "not-allowed")
    assert lines[1:] == ["in place"]


def test_the_environment_switch_keeps_the_command_in_its_own_interpreter(tmp_path: Path) -> None:
    lines = _run(tmp_path, "allowed", {relaunch.DISABLE_ENV: "1"})
    assert lines[1:] == ["in place"]


def test_receive_refuses_a_command_line_without_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(SystemExit, match="usage: test"):
        relaunch.receive("usage: test")


def test_interpreter_options_before_dash_m_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "orig_argv", ["python", "-X", "importtime", "-u", "-m", "relay_server", "serve", "-m"])
    assert relaunch._interpreter_options() == ["-X", "importtime", "-u"]
    monkeypatch.setattr(sys, "orig_argv", ["python", "/venv/bin/relay-server", "serve"])
    assert relaunch._interpreter_options() == []
