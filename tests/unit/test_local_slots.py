"""The local pool's connection limit (relay_client/localhttp._Slots): plain-call taking, fair waiting, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from relay_client.localhttp import _Slots


async def test_free_slots_are_taken_without_awaiting_and_then_refused():
    slots = _Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    slots.release()
    assert slots.try_take()


async def test_a_released_slot_goes_to_the_longest_waiter_not_to_a_newcomer():
    slots = _Slots(1)
    assert slots.try_take()
    first = asyncio.create_task(slots.take(5))
    second = asyncio.create_task(slots.take(5))
    await asyncio.sleep(0.01)
    slots.release()
    assert not slots.try_take()  # someone waits: a newcomer does not jump the queue
    await asyncio.wait_for(first, 1)
    assert not second.done()
    slots.release()
    await asyncio.wait_for(second, 1)
    slots.release()
    assert slots.free == 1 and not slots.waiters


async def test_a_waiter_that_times_out_leaves_the_queue_and_loses_no_slot():
    slots = _Slots(1)
    assert slots.try_take()
    with pytest.raises(TimeoutError):
        await slots.take(0.02)
    assert not slots.waiters
    slots.release()
    assert slots.free == 1


async def test_a_cancelled_waiter_handed_a_slot_passes_it_on():
    slots = _Slots(1)
    assert slots.try_take()
    waiting = asyncio.create_task(slots.take(5))
    await asyncio.sleep(0.01)
    slots.release()  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it resumes
    try:
        await waiting
    except asyncio.CancelledError:
        pass  # gave the slot back
    else:
        slots.release()  # asyncio.wait_for kept the result: the slot is the caller's
    assert slots.free == 1 and not slots.waiters
