"""Reconnect policy: capped exponential backoff with full jitter, reset after a stable run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: First retry delay, in seconds.
BACKOFF_INITIAL = 0.5

#: Longest wait between attempts.
BACKOFF_CAP = 30.0

#: A connection that lasted this long resets the backoff to the start.
STABLE_AFTER = 30.0


@dataclass(slots=True)
class Backoff:
    """Delays for successive failed attempts."""

    initial: float = BACKOFF_INITIAL
    cap: float = BACKOFF_CAP
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The wait before the next attempt: uniform in [base/2, base], base doubling to the cap."""
        base = min(self.cap, self.initial * (2 ** min(self.attempt, 64)))  # no float overflow after days
        self.attempt += 1
        return base / 2 + self.rng.random() * base / 2

    def reset(self) -> None:
        """Start the schedule over (the last connection was fine; the relay asked us to move)."""
        self.attempt = 0

    def connected_for(self, seconds: float) -> None:
        """A connection just ended after ``seconds``; a stable one resets the schedule."""
        if seconds >= STABLE_AFTER:
            self.attempt = 0
