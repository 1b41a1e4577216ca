"""Child processes for the e2e tests: each in its own session, output captured, stopped by PID.

A ``ManagedProcess`` reads the child's stdout and stderr on two threads into
line lists, so a test can wait (with a deadline) for a line such as
``Forwarding ...`` without ever blocking on a pipe.  ``ProcessGroup`` remembers
everything a fixture started and stops it all, newest first, at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

#: Seconds a process gets to exit after SIGTERM before it is killed.
STOP_GRACE = 5.0

#: Seconds to wait for a killed process to be reaped.
KILL_WAIT = 5.0

#: Repository root: children run from here.
REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment minus anything that would steer the product."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SSL_CERT_FILE", None)
    if extra:
        env.update(extra)
    return env


class ProcessExited(AssertionError):
    """The process ended while we were waiting for it to say something."""


class ManagedProcess:
    """One child process with captured, line-split output."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self._cond = threading.Condition()
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env if env is not None else child_env(),
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while running."""
        return self.proc.poll()

    def _read(self, pipe, stream: str) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self.lines[stream].append(line)
                self._cond.notify_all()
        pipe.close()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        """Everything captured so far, for assertion messages."""
        with self._cond:
            return self._output()

    def _output(self) -> str:
        out = "\n".join(self.lines["stdout"])
        err = "\n".join(self.lines["stderr"])
        return f"--- {self.name} (pid {self.pid}, rc {self.proc.poll()}) stdout:\n{out}\n--- stderr:\n{err}"

    def mark(self, stream: str = "stdout") -> int:
        """Number of lines captured so far (pass as ``after=`` to wait for a new line)."""
        with self._cond:
            return len(self.lines[stream])

    def count(self, pattern: str, stream: str = "stdout") -> int:
        """How many captured lines match ``pattern`` (re.search)."""
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines[stream] if regex.search(line))

    def wait_for_line(self, pattern: str, *, stream: str = "stdout", timeout: float = 15.0, after: int = 0) -> re.Match[str]:
        """The first line at index >= ``after`` matching ``pattern``; fail after ``timeout`` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = after
        with self._cond:
            while True:
                lines = self.lines[stream]
                for line in lines[checked:]:
                    match = regex.search(line)
                    if match:
                        return match
                checked = max(checked, len(lines))
                readers_done = not any(r.is_alive() for r in self._readers)
                if self.proc.poll() is not None and readers_done:
                    raise ProcessExited(f"{self.name} exited before printing /{pattern}/\n{self._output()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name} did not print /{pattern}/ within {timeout:g}s\n{self._output()}")
                self._cond.wait(min(remaining, 0.2))

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself; its exit status.  Fails after ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:g}s\n{self.output()}") from None
        for reader in self._readers:
            reader.join(KILL_WAIT)
        return code

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process (by PID) if it is still running."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM by PID, wait up to ``grace`` seconds, then SIGKILL; its exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(KILL_WAIT)
            except ProcessLookupError:
                pass
        for reader in self._readers:
            reader.join(KILL_WAIT)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL by PID (a crash, no goodbye) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(KILL_WAIT)
        for reader in self._readers:
            reader.join(KILL_WAIT)
        return self.proc.returncode


class ProcessGroup:
    """Processes started by one fixture; ``stop_all`` ends them newest first."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> ManagedProcess:
        """Start and remember a process."""
        process = ManagedProcess(name, argv, env)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every remembered process by its PID."""
        while self.processes:
            self.processes.pop().stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv for ``python -m module args...`` with the interpreter running the tests."""
    return [sys.executable, "-m", module, *args]
