"""Stand-ins for relay parts in the fleet unit tests: a tunnel that only records what happens to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay_server.registry import Owner


@dataclass(eq=False)
class FakeTunnel:
    """A Claimant: a name, an owner, and what the registry did to it."""

    name: str
    owner: Owner
    accepting: bool = True
    said_goodbye: bool = False
    evicted: str | None = None

    def evict(self, reason: str) -> None:
        self.evicted = reason
        self.accepting = False
        self.said_goodbye = True


async def eventually(check: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s (last value {value!r})")
        await asyncio.sleep(0.05)
