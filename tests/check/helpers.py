"""Helpers for the ``relay-client check`` tests: run ``check`` as a user does, start plugins, MCP servers and tunnels.

``check`` runs as ``python -m relay_client.check`` (its own process), so tests
see exactly the lines and exit codes a user sees.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.localrelay import Agent, Relay, start_agent
from support.ports import free_port
from support.processes import REPO_ROOT, ProcessGroup, child_env

#: Seconds a whole ``check`` run may take (each of its network steps is bounded far lower).
CHECK_TIMEOUT = 60.0

#: Seconds a server gets to start listening.
SERVER_START_TIMEOUT = 20.0

PLUGIN_DIR = REPO_ROOT / "examples" / "plugin"
PLUGIN_SERVER = PLUGIN_DIR / "server.py"
SERVERS_DIR = Path(__file__).resolve().parent / "servers"


@dataclass
class CheckRun:
    """One finished ``check``: exit status, output, and the report lines split up."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        """Every stdout line."""
        return self.stdout.splitlines()

    def results(self, status: str | None = None) -> list[str]:
        """Report lines (``PASS name: message``), optionally only those with ``status``."""
        prefixes = (status,) if status else ("PASS", "FAIL", "WARN")
        return [line for line in self.lines if line.startswith(tuple(f"{p} " for p in prefixes))]

    def line(self, status: str, name: str) -> str:
        """The one report line for check ``name`` with ``status``; fails listing the output otherwise."""
        found = [line for line in self.results(status) if line.startswith(f"{status} {name}: ")]
        assert len(found) == 1, f"expected one '{status} {name}:' line\n{self.describe()}"
        return found[0]

    def fix_after(self, status: str, name: str) -> str:
        """The ``fix:`` line printed under a FAIL or WARN line."""
        index = self.lines.index(self.line(status, name))
        following = self.lines[index + 1].strip()
        assert following.startswith("fix: "), f"no fix under '{status} {name}'\n{self.describe()}"
        return following.removeprefix("fix: ")

    def describe(self) -> str:
        """Everything, for assertion messages."""
        return f"--- exit {self.returncode}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"


def run_check(*args: str, entry: tuple[str, ...] = ("-m", "relay_client.check")) -> CheckRun:
    """Run ``check ARGS`` as a user would (its own process) and collect the result."""
    result = subprocess.run(
        [sys.executable, *entry, *args],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT,
        cwd=REPO_ROOT,
        env=child_env(),
        check=False,
    )
    run = CheckRun(result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, run.describe()
    return run


def tunnel(group: ProcessGroup, relay: Relay, port: int, name: str, *extra: str) -> Agent:
    """``relay-client http PORT --subdomain NAME``; its public URL once the tunnel is up."""
    return start_agent(group, relay, str(port), None, subdomain=name, extra=extra)


def start_plugin(
    group: ProcessGroup, *, public_url: str | None = None, files: Path | None = None, cors_origins: tuple[str, ...] = ()
) -> int:
    """``examples/plugin/server.py PORT`` (optionally with other files, public URL or CORS origins); its port."""
    port = free_port()
    argv = [sys.executable, str(PLUGIN_SERVER), str(port)]
    if public_url:
        argv += ["--public-url", public_url]
    if files:
        argv += ["--files", str(files)]
    for origin in cors_origins:
        argv += ["--cors-origin", origin]
    process = group.start(f"plugin:{port}", argv)
    process.wait_for_line(rf"^plugin listening on http://localhost:{port} ", timeout=SERVER_START_TIMEOUT)
    return port


def start_mcp_server(group: ProcessGroup, script: str, *args: str) -> int:
    """One of ``servers/*.py`` on a free port; its port once it listens."""
    port = free_port()
    process = group.start(f"{script}:{port}", [sys.executable, str(SERVERS_DIR / script), "--port", str(port), *args])
    process.wait_for_line(rf"^mcp listening on 127\.0\.0\.1:{port}$", timeout=SERVER_START_TIMEOUT)
    return port


def public_url(relay: Relay, name: str) -> str:
    """The URL a tunnel called ``name`` gets on ``relay``."""
    return f"http://{name}.localhost:{relay.port}"
