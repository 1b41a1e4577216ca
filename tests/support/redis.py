"""A throwaway redis-server on 127.0.0.1 for the fleet tests (Debian's package).

``start_redis(processes)`` starts one with no persistence on a free port (or the
port given, to restart an "empty Redis" where nodes knew the old one), waits
until it answers PING, and returns a ``RedisServer``; ``stop()``/``kill()`` end
it by PID.  The fixture ``redis_server`` in tests/fleet/conftest.py wraps it.
"""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import dataclass

from support.ports import LOOPBACK, free_port
from support.processes import ManagedProcess, ProcessGroup

#: Debian's redis-server (apt-get install redis-server); PATH is tried second.
REDIS_SERVER = "/usr/bin/redis-server"

#: Seconds a fresh redis-server gets to answer PING.
REDIS_START_TIMEOUT = 15.0


def redis_binary() -> str | None:
    """Path of redis-server, or None when it is not installed."""
    if shutil.which(REDIS_SERVER):
        return REDIS_SERVER
    return shutil.which("redis-server")


def redis_argv(port: int, *extra: str) -> list[str]:
    """argv for a loopback redis-server on ``port`` that writes nothing to disk."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return [
        binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning", *extra,
    ]


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:port answers PING (raw RESP, no client library)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass(slots=True)
class RedisServer:
    """One running redis-server and how to reach it."""

    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (what ``--cluster`` takes)."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """Still running and answering PING."""
        return self.process.returncode is None and ping(self.port)

    def stop(self) -> None:
        """SIGTERM by PID (then SIGKILL), and wait until the port is closed."""
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL by PID: Redis vanishes at once, as in a crash."""
        self.process.kill()


def start_redis(processes: ProcessGroup, port: int | None = None, *extra: str) -> RedisServer:
    """Start redis-server on ``port`` (a free one if None) and wait until it answers PING."""
    port = port or free_port()
    process = processes.start(f"redis-server:{port}", redis_argv(port, *extra))
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while not ping(port):
        if process.returncode is not None:
            raise AssertionError(f"redis-server exited at start\n{process.output()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"redis-server did not answer PING within {REDIS_START_TIMEOUT:g}s\n{process.output()}"
            )
        time.sleep(0.05)
    return RedisServer(port, process)
