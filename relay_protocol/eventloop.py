"""Run a coroutine on uvloop where the platform has it, else on asyncio's loop; tune the collector while serving."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

#: Net allocations between collections of the young generation while serving (CPython: 700).
GC_YOUNG_THRESHOLD = 10_000

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` with uvloop when importable."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@contextmanager
def fewer_young_collections(threshold: int = GC_YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect the young generation less often while the relay or agent serves.

    Each request allocates a few hundred tracked objects and frees nearly all by
    reference counting; at CPython's default (a collection every 700 net
    allocations) the young generation was scanned every ~70 requests, a few
    percent of the CPU.  Unreachable cycles are freed a little later; the old
    threshold is back when the block ends.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
