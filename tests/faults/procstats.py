"""Resource readings of a running process from /proc: resident memory and open file descriptors.

A fault test takes a ``Baseline`` of the relay (or agent) once it is warm,
inflicts the fault a few times, then ``assert_back`` polls until the process
has let go of what the faults made it hold: the open fds return to the
baseline (within a small slack: a keep-alive socket may come and go) and the
resident memory has not grown by more than a leak tolerance.  Python rarely
hands freed memory back to the OS, so memory is checked for growth only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024

#: Open fds a process may differ from its baseline by (a pooled keep-alive socket, a log file rotating).
FD_SLACK = 2

#: Resident memory a process may have gained over its baseline after several faults.
RSS_SLACK = 15 * MIB

#: Seconds a process gets to release what a fault left behind (asynchronous clean-up).
SETTLE_TIMEOUT = 15.0


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """Number of file descriptors ``pid`` holds open (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    """What each open fd points at (``socket:[...]``, a path...), for failure messages."""
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:  # closed between listdir and readlink
            pass
    kinds: dict[str, int] = {}
    for target in targets:
        kind = target.split(":", 1)[0] if ":" in target else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return [f"{kind} x{count}" for kind, count in sorted(kinds.items())]


@dataclass(frozen=True)
class Reading:
    """One sample of a process's resources."""

    rss: int
    fds: int

    @classmethod
    def of(cls, pid: int) -> Reading:
        """Read ``pid`` now."""
        return cls(rss_bytes(pid), open_fds(pid))

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.rss / MIB:.1f} MiB RSS"


@dataclass(frozen=True)
class Baseline:
    """A warm process's resources, to compare with after faults."""

    pid: int
    what: str
    reading: Reading

    @classmethod
    def take(cls, pid: int, what: str, samples: int = 5, interval: float = 0.2) -> Baseline:
        """Read a warm ``pid`` a few times: the fewest fds seen (a closing socket is not held), the most RSS."""
        readings = []
        for index in range(samples):
            if index:
                time.sleep(interval)
            readings.append(Reading.of(pid))
        return cls(pid, what, Reading(max(r.rss for r in readings), min(r.fds for r in readings)))

    def assert_back(
        self, fd_slack: int = FD_SLACK, rss_slack: int = RSS_SLACK, timeout: float = SETTLE_TIMEOUT
    ) -> Reading:
        """Poll until fds are within ``fd_slack`` of the baseline and RSS within ``rss_slack`` above it."""
        deadline = time.monotonic() + timeout
        while True:
            now = Reading.of(self.pid)
            fds_ok = abs(now.fds - self.reading.fds) <= fd_slack
            rss_ok = now.rss - self.reading.rss <= rss_slack
            if fds_ok and rss_ok:
                return now
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.what} (pid {self.pid}) did not return to its baseline within {timeout:g}s: "
                    f"baseline {self.reading}, now {now} (allowed: fds ±{fd_slack}, RSS +{rss_slack / MIB:g} MiB); "
                    f"open fds now: {', '.join(fd_targets(self.pid))}"
                )
            time.sleep(0.25)
