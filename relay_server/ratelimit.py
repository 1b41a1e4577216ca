"""Failed-login throttling per source address for the agent endpoint.

Tokens are 256-bit random strings, so guessing one is hopeless; the point is
to keep a scanner from turning the relay into a free hashing service and
its logs into noise.  After ``limit`` failures within ``window`` seconds an
address is answered 429 before its token is even looked at, until its oldest
counted failure is older than the window.  Memory is bounded: at most
``limit`` timestamps per address and ``max_addresses`` addresses, the least
recently failing forgotten first.  IPv6 addresses count per /64, the block
one subscriber usually gets, so hopping addresses inside it does not help.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

#: Seconds over which failures are counted.
FAILURE_WINDOW = 60.0

#: Most source addresses tracked at once (each costs at most ``limit`` floats).
MAX_TRACKED_ADDRESSES = 10_000


def address_key(address: str) -> str:
    """The bucket an address counts in: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]  # not an IP (a unix socket, a test transport): count it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class FailureLimiter:
    """Counts failures per address in a sliding window; says when one is over the limit."""

    def __init__(
        self,
        limit: int,
        window: float = FAILURE_WINDOW,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Addresses currently tracked."""
        return len(self._failures)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None if it is not blocked."""
        if self.limit <= 0:
            return None
        key = address_key(address)
        times = self._failures.get(key)
        if times is None:
            return None
        now = self._clock()
        self._expire(key, times, now)
        if len(times) < self.limit:
            return None
        return max(times[0] + self.window - now, 0.001)

    def failure(self, address: str) -> None:
        """Count one failed login from ``address``."""
        if self.limit <= 0:
            return
        key = address_key(address)
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            while len(self._failures) >= self.max_addresses:
                self._failures.popitem(last=False)  # least recently failing first
            times = self._failures[key] = deque(maxlen=self.limit)
        else:
            self._failures.move_to_end(key)
        times.append(now)

    def _expire(self, key: str, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]


def retry_after_header(seconds: float) -> str:
    """Whole seconds for a Retry-After header (rounded up, at least 1)."""
    return str(max(1, math.ceil(seconds)))
