"""Fleet errors, importable without the Redis client (the agent endpoint catches them)."""

from __future__ import annotations


class FleetUnavailable(Exception):
    """The fleet's Redis cannot be reached: names cannot be claimed fleet-wide right now.

    The message is the sentence an agent sees; retrying later helps.
    """
