"""Start the product's processes (relay, agent) and the origin, and wait until each is ready.

Everything goes through the product's outside: command lines, the lines it
prints, and ``GET /_relay/health``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from relay_server.proxyheader import v1_header
from support.ports import LOOPBACK, free_port
from support.processes import ManagedProcess, ProcessExited, ProcessGroup, child_env, python_module

#: Seconds a relay, agent or origin gets to come up.
START_TIMEOUT = 20.0

#: Seconds a ``relay-server token ...`` command may take.
CLI_TIMEOUT = 30.0

ORIGIN_SCRIPT = Path(__file__).resolve().parent / "origin.py"

#: ``relay-client http 3000 --server http://localhost:PORT --token lr_...``
PASTE_LINE = r"^relay-client http 3000 --server (http://localhost:(\d+)) --token (lr_[A-Za-z0-9_-]+)$"

#: ``Forwarding http://NAME.localhost:PORT -> http://localhost:ORIGIN_PORT``
FORWARDING_LINE = r"^Forwarding (http://([a-z0-9-]+)\.localhost:(\d+)) -> (\S+)$"


@dataclass
class Origin:
    """The local HTTP server behind a tunnel."""

    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        """Direct URL, bypassing the tunnel."""
        return f"http://{LOOPBACK}:{self.port}"


@dataclass
class Relay:
    """A running relay-server."""

    port: int
    data_dir: Path
    process: ManagedProcess
    #: The token printed on first start (None if the store was not empty, or --open).
    token: str | None
    #: The whole paste-ready line printed on first start.
    paste_line: str | None

    @property
    def server_url(self) -> str:
        """What agents are given as --server."""
        return f"http://localhost:{self.port}"

    def health(self) -> dict:
        """``GET /_relay/health`` on the base domain, as JSON."""
        status, body = get_direct(self.port, "/_relay/health", host=f"localhost:{self.port}")
        assert status == 200, f"health answered {status}: {body[:300]!r}"
        return json.loads(body)


@dataclass
class Agent:
    """A running relay-client with its tunnel up."""

    process: ManagedProcess
    public_url: str
    name: str
    local_url: str

    @property
    def host(self) -> str:
        """The Host header public requests to this tunnel carry."""
        return self.public_url.removeprefix("http://")


class _ProxiedConnection(http.client.HTTPConnection):
    """An HTTP connection that opens with a PROXY v1 header, as a TCP balancer's would."""

    def __init__(self, port: int, client: str, timeout: float) -> None:
        super().__init__(LOOPBACK, port, timeout=timeout)
        self.client = client

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.sendall(v1_header((self.client, 40000), (LOOPBACK, self.port)))


def get_direct(
    port: int, path: str, host: str | None = None, timeout: float = 2.0, *, proxied_for: str | None = None
) -> tuple[int, bytes]:
    """A plain GET to 127.0.0.1:port with an optional Host header (for polling from sync code).

    ``proxied_for``: open with a PROXY header naming that client (a relay run with ``--proxy-protocol``).
    """
    conn = (
        http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
        if proxied_for is None
        else _ProxiedConnection(port, proxied_for, timeout)
    )
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "condition") -> None:
    """Poll ``predicate`` until it returns true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except ProcessExited:  # waiting longer cannot help
            raise
        except Exception as exc:  # not up yet: keep polling until the deadline
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout:g}s (last error: {last_error!r})")


def start_origin(group: ProcessGroup, port: int | None = None) -> Origin:
    """Start ``origin.py`` on 127.0.0.1 and wait until it listens."""
    port = port or free_port()
    # The pure-Python HTTP parser accepts every RFC 9110 method token (llhttp knows a fixed
    # list), so whatever the origin receives is limited by the relay, not by the origin.
    env = child_env({"AIOHTTP_NO_EXTENSIONS": "1"})
    process = group.start(f"origin:{port}", [sys.executable, str(ORIGIN_SCRIPT), "--port", str(port)], env)
    process.wait_for_line(rf"^origin listening on 127\.0\.0\.1:{port}$", timeout=START_TIMEOUT)
    return Origin(port, process)


def start_relay(
    group: ProcessGroup,
    data_dir: Path,
    *,
    port: int | None = None,
    extra: tuple[str, ...] = (),
    expect_paste_line: bool = True,
) -> Relay:
    """Start ``relay-server serve`` on 127.0.0.1; wait for health (and the first-start line)."""
    port = port or free_port()
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(port), "--data-dir", str(data_dir), *extra
    )
    process = group.start(f"relay:{port}", argv)
    token = paste = None
    if expect_paste_line:
        match = process.wait_for_line(PASTE_LINE, timeout=START_TIMEOUT)
        paste, token = match.group(0), match.group(3)

    def healthy() -> bool:
        if process.returncode is not None:
            raise ProcessExited(f"relay exited before it was healthy\n{process.output()}")
        status, _ = get_direct(port, "/_relay/health", host=f"localhost:{port}", timeout=1.0)
        return status == 200

    wait_until(healthy, START_TIMEOUT, message=f"relay on port {port} healthy")
    return Relay(port, data_dir, process, token, paste)


@lru_cache(maxsize=1)
def _agent_default_args() -> tuple[str, ...]:
    """Options every test agent gets: no local inspector, if this version has one (it would fight over port 4040)."""
    result = subprocess.run(
        python_module("relay_client", "http", "--help"),
        capture_output=True, text=True, timeout=CLI_TIMEOUT, env=child_env(), check=False,
    )
    return ("--no-inspect",) if "--no-inspect" in result.stdout else ()


def agent_argv(relay_port: int, target: str, token: str | None, subdomain: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """``relay-client http TARGET --server http://localhost:PORT [--token T] [--subdomain S]``."""
    argv = python_module("relay_client", "http", target, "--server", f"http://localhost:{relay_port}")
    if token is not None:
        argv += ["--token", token]
    if subdomain is not None:
        argv += ["--subdomain", subdomain]
    return argv + list(_agent_default_args()) + list(extra)


def start_agent(
    group: ProcessGroup,
    relay: Relay,
    target: str,
    token: str | None,
    subdomain: str | None = None,
    extra: tuple[str, ...] = (),
) -> Agent:
    """Start ``relay-client http`` and wait for its ``Forwarding`` line."""
    process = group.start(f"agent->{target}", agent_argv(relay.port, target, token, subdomain, extra))
    match = process.wait_for_line(FORWARDING_LINE, timeout=START_TIMEOUT)
    assert int(match.group(3)) == relay.port, match.group(0)
    return Agent(process, match.group(1), match.group(2), match.group(4))


def relay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``relay-server ARGS`` to completion (token commands)."""
    return subprocess.run(
        python_module("relay_server", *args),
        capture_output=True, text=True, timeout=CLI_TIMEOUT, env=child_env(), check=False,
    )


def create_token(data_dir: Path, *options: str) -> str:
    """``relay-server token create OPTIONS --data-dir DIR``; the printed token."""
    result = relay_cli("token", "create", *options, "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "\n" not in token and token.startswith("lr_"), f"token create printed {result.stdout!r}"
    return token


#: Seconds a refused agent gets to give up and exit.
REFUSAL_TIMEOUT = 10.0


def run_refused_agent(
    group: ProcessGroup, relay_port: int, target: str, token: str | None, subdomain: str | None = None
) -> tuple[int, str, float]:
    """Run an agent that should be refused: (exit status, its one ``relay-client: error:`` line, seconds taken)."""
    started = time.monotonic()
    process = group.start("refused-agent", agent_argv(relay_port, target, token, subdomain))
    code = process.wait_exit(REFUSAL_TIMEOUT)
    elapsed = time.monotonic() - started
    output = process.output()
    errors = [line for line in process.lines["stderr"] if line.startswith("relay-client: error:")]
    assert len(errors) == 1, f"expected one 'relay-client: error:' line\n{output}"
    assert "Traceback" not in output, output
    assert process.count(r"^Forwarding ") == 0, output
    return code, errors[0], elapsed
