"""Reconnect backoff: capped, jittered, reset after a stable run (relay_client/reconnect.py)."""

from __future__ import annotations

import random

from relay_client.reconnect import BACKOFF_CAP, BACKOFF_INITIAL, STABLE_AFTER, Backoff


def test_delays_double_from_the_initial_delay_with_jitter_in_the_upper_half():
    backoff = Backoff(rng=random.Random(1))
    for attempt in range(6):
        base = BACKOFF_INITIAL * 2**attempt
        delay = backoff.next_delay()
        assert base / 2 <= delay <= base
    assert backoff.attempt == 6


def test_delays_never_exceed_the_cap():
    backoff = Backoff(rng=random.Random(2))
    delays = [backoff.next_delay() for _ in range(40)]
    assert max(delays) <= BACKOFF_CAP
    assert min(delays[10:]) >= BACKOFF_CAP / 2


def test_jitter_spreads_agents_apart():
    delays = {Backoff(rng=random.Random(seed), attempt=10).next_delay() for seed in range(50)}
    assert len(delays) == 50
    assert min(delays) < BACKOFF_CAP * 0.6 and max(delays) > BACKOFF_CAP * 0.9


def test_jitter_bounds_hold_at_both_ends_of_the_random_range():
    class Fixed(random.Random):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def random(self):
            return self.value

    assert Backoff(rng=Fixed(0.0)).next_delay() == BACKOFF_INITIAL / 2
    assert Backoff(rng=Fixed(0.999999)).next_delay() <= BACKOFF_INITIAL


def test_a_stable_connection_resets_the_schedule():
    backoff = Backoff(rng=random.Random(3))
    for _ in range(8):
        backoff.next_delay()
    backoff.connected_for(STABLE_AFTER)
    assert backoff.attempt == 0
    assert backoff.next_delay() <= BACKOFF_INITIAL


def test_a_short_connection_keeps_backing_off():
    backoff = Backoff(rng=random.Random(4))
    for _ in range(8):
        backoff.next_delay()
    backoff.connected_for(STABLE_AFTER - 0.1)
    assert backoff.attempt == 8
    assert backoff.next_delay() >= BACKOFF_CAP / 2


def test_backoff_keeps_working_after_days_of_failures():
    # An agent retries forever once it has connected; at the 30 s cap, 1100
    # attempts is about nine hours of relay downtime.
    backoff = Backoff(rng=random.Random(5))
    for _ in range(1100):
        delay = backoff.next_delay()
    assert BACKOFF_CAP / 2 <= delay <= BACKOFF_CAP
