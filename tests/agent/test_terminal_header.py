"""On a terminal the agent draws a live status header; on a pipe it prints plain lines."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
import urllib.request

from support.localrelay import Origin, Relay, agent_argv
from support.ports import LOOPBACK
from support.processes import child_env

_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[78])")


def _read_until(fd: int, pattern: bytes, timeout: float, seen: bytearray) -> bytes:
    """Read the terminal until ``pattern`` (ANSI codes stripped) shows up; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _ANSI.sub(b"", bytes(seen))
        if re.search(pattern, text):
            return text
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    raise AssertionError(f"{pattern!r} not seen on the terminal:\n{_ANSI.sub(b'', bytes(seen)).decode(errors='replace')}")


def test_the_terminal_shows_a_live_header_with_url_state_and_request_counts(relay: Relay, doc_origin: Origin) -> None:
    master, slave = pty.openpty()
    argv = agent_argv(relay.port, str(doc_origin.port), None, "tty")
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=child_env({"COLUMNS": "120", "LINES": "40"}),
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()
    try:
        screen = _read_until(master, rb"Status\s+online", 20, seen)
        assert b"Forwarding  http://tty.localhost:" in screen
        assert re.search(rb"Forwarding http://tty\.localhost:\d+ -> http://localhost:\d+", screen)  # the contract line
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{relay.port}/plain", headers={"Host": f"tty.localhost:{relay.port}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read() == b"plain"
        screen = _read_until(master, rb"Requests\s+1 total, 0 in flight, 0 failed", 10, seen)
        assert re.search(rb"GET\s+/plain\s+200", screen)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        while select.select([master], [], [], 0.2)[0]:  # what it wrote while stopping
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
    assert b"\x1b[r" in seen  # the scroll region was given back on exit
