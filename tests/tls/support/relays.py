"""Relay and agent processes with TLS on: start, wait for readiness, read what they print."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from support.localrelay import START_TIMEOUT, _agent_default_args, get_direct, wait_until
from support.ports import LOOPBACK, free_port, port_is_open
from support.processes import ManagedProcess, ProcessGroup, python_module

#: ``relay-client http 3000 --server https://localhost:PORT --token lr_... [--cacert CA]``
PASTE_LINE = r"^relay-client http 3000 --server (https?://\S+) --token (lr_[A-Za-z0-9_-]+)(?: --cacert (\S+))?$"

#: ``Forwarding https://NAME.DOMAIN:PORT -> http://localhost:ORIGIN``
FORWARDING_LINE = r"^Forwarding (https?://([a-z0-9-]+)\.[a-z0-9.-]+(?::(\d+))?) -> (\S+)$"


@dataclass
class TLSRelay:
    """A running relay-server with a TLS listener."""

    process: ManagedProcess
    http_port: int
    https_port: int
    data_dir: Path
    #: The first-start token and the --server / --cacert of the paste line.
    token: str | None
    server_url: str | None
    cacert: str | None

    def stderr(self) -> str:
        """Everything the relay logged so far."""
        return "\n".join(self.process.lines["stderr"])


@dataclass
class TLSAgent:
    """A running relay-client with its tunnel up."""

    process: ManagedProcess
    public_url: str
    name: str


def relay_argv(data_dir: Path, http_port: int, https_port: int | None, extra: tuple[str, ...]) -> list[str]:
    """argv of ``relay-server serve`` on 127.0.0.1 with these ports."""
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(http_port), "--data-dir", str(data_dir)
    )
    if https_port is not None:
        argv += ["--https-port", str(https_port)]
    return argv + list(extra)


def start_tls_relay(
    group: ProcessGroup,
    data_dir: Path,
    *extra: str,
    http_port: int | None = None,
    https_port: int | None = None,
    expect_paste_line: bool = True,
) -> TLSRelay:
    """Start a relay with ``--https-port`` and ``extra`` options; wait until both listeners answer."""
    http_port = http_port or free_port()
    https_port = https_port or free_port()
    process = group.start(f"relay:{https_port}", relay_argv(data_dir, http_port, https_port, extra))
    token = server = cacert = None
    if expect_paste_line:
        match = process.wait_for_line(PASTE_LINE, timeout=START_TIMEOUT)
        server, token, cacert = match.group(1), match.group(2), match.group(3)

    def up() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"relay exited early\n{process.output()}")
        status, _ = get_direct(http_port, "/_relay/health", timeout=1.0)
        return status == 200 and port_is_open(https_port)

    wait_until(up, START_TIMEOUT, message=f"relay with TLS on {https_port} up")
    return TLSRelay(process, http_port, https_port, data_dir, token, server, cacert)


def start_tls_agent(
    group: ProcessGroup,
    server: str,
    target: str,
    token: str | None,
    *,
    cacert: Path | str | None = None,
    subdomain: str | None = None,
) -> TLSAgent:
    """``relay-client http TARGET --server SERVER [--cacert CA]``; wait for its Forwarding line."""
    argv = python_module("relay_client", "http", target, "--server", server, *_agent_default_args())
    if token:
        argv += ["--token", token]
    if cacert:
        argv += ["--cacert", str(cacert)]
    if subdomain:
        argv += ["--subdomain", subdomain]
    process = group.start(f"agent->{target}", argv)
    match = process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
    return TLSAgent(process, match.group(1), match.group(2))


def run_relay_to_exit(group: ProcessGroup, data_dir: Path, *extra: str, timeout: float = START_TIMEOUT) -> tuple[int, list[str], str]:
    """Run a relay that should refuse to start: (exit status, its stderr lines, all output)."""
    process = group.start("refused-relay", relay_argv(data_dir, free_port(), None, extra))
    code = process.wait_exit(timeout)
    return code, list(process.lines["stderr"]), process.output()


def count_lines(process: ManagedProcess, pattern: str) -> int:
    """Lines of the process's stderr matching ``pattern``."""
    regex = re.compile(pattern)
    return sum(1 for line in process.lines["stderr"] if regex.search(line))
