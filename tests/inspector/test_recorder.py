"""The recorder: bounded history, lookup, clear, live subscribers."""

from __future__ import annotations

import pytest

from relay_client.inspector.recorder import Recorder

from .conftest import finished_exchange, record


def test_history_keeps_only_the_newest_exchanges_up_to_its_bound() -> None:
    recorder = Recorder(limit=5)
    exchanges = [record(recorder, finished_exchange(target=f"/n/{i}")) for i in range(12)]
    assert len(recorder) == 5
    assert [e.target for e in recorder.newest_first()] == [f"/n/{i}" for i in range(11, 6, -1)]
    assert recorder.get(exchanges[0].id) is None
    assert recorder.get(exchanges[-1].id) is exchanges[-1]


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Recorder(limit=0)


def test_clear_forgets_everything_but_metrics_keep_counting() -> None:
    recorder = Recorder()
    for _ in range(3):
        record(recorder, finished_exchange())
    recorder.clear()
    assert len(recorder) == 0
    assert list(recorder.newest_first()) == []
    assert recorder.metrics.as_ngrok()["http"]["count"] == 3


def test_events_for_an_evicted_exchange_are_not_announced() -> None:
    recorder = Recorder(limit=1)
    old = finished_exchange(target="/old")
    recorder.request_started(old)
    recorder.request_started(finished_exchange(target="/new"))
    with recorder.subscribe() as feed:
        recorder.response_started(old)
        recorder.finished(old)
        assert feed.queue.empty()


async def test_subscribers_see_request_update_and_clear_events_in_order() -> None:
    recorder = Recorder()
    with recorder.subscribe() as feed:
        exchange = record(recorder, finished_exchange())
        recorder.clear()
        kinds = [(await feed.get()) for _ in range(4)]
    assert [e.kind for e in kinds] == ["request", "update", "update", "clear"]
    assert kinds[0].exchange is exchange
    assert recorder.subscriber_count == 0


async def test_a_subscriber_that_falls_behind_gets_one_resync_instead_of_a_growing_backlog() -> None:
    recorder = Recorder(limit=1000)
    with recorder.subscribe(backlog=4) as feed:
        for _ in range(50):
            record(recorder, finished_exchange())
        assert feed.queue.qsize() <= 4
        events = [feed.queue.get_nowait() for _ in range(feed.queue.qsize())]
    assert "resync" in [e.kind for e in events]


async def test_closing_subscribers_ends_every_feed() -> None:
    recorder = Recorder()
    first, second = recorder.subscribe(), recorder.subscribe()
    recorder.close_subscribers()
    assert (await first.get()).kind == "close"
    assert (await second.get()).kind == "close"
    assert recorder.subscriber_count == 0
