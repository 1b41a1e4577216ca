"""The SSE parser without sockets: line endings, chunk splits, comments, limits, and arrival times."""

from __future__ import annotations

import pytest

from relay_client.check.sse import SSEError, SSEParser


def test_events_split_across_chunks_are_stamped_with_the_chunk_that_completed_them() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: message\nda", 1.0) == []
    [first] = parser.feed(b'ta: {"a": 1}\n\ndata: x', 2.0)
    assert (first.event, first.data, first.arrived) == ("message", '{"a": 1}', 2.0)
    [second] = parser.feed(b"\n\n", 3.5)
    assert (second.data, second.arrived) == ("x", 3.5)
    assert parser.events == [first, second]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_the_standard_allows_is_understood(newline: bytes) -> None:
    parser = SSEParser()
    events = parser.feed(newline.join([b"id: 7", b"data: one", b"data: two", b"", b""]), 0.0)
    assert [(e.id, e.data) for e in events] == [("7", "one\ntwo")]


def test_a_crlf_split_between_chunks_is_one_line_break() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\r", 0.0)
    assert [e.data for e in parser.feed(b"\n\r\n", 1.0)] == ["a"]


def test_comments_are_skipped_and_a_primer_with_only_an_id_still_counts() -> None:
    parser = SSEParser()
    events = parser.feed(b": keep-alive\n\nid: 1\ndata:\n\nevent: message\ndata: {}\n\n", 0.0)
    assert [(e.id, e.data) for e in events] == [("1", ""), ("1", "{}")]


def test_an_oversized_event_or_line_is_refused() -> None:
    with pytest.raises(SSEError, match="passed 16 bytes"):
        SSEParser(max_event_bytes=16).feed(b"data: 0123456789\ndata: 0123456789\n\n", 0.0)
    with pytest.raises(SSEError, match="line passed 16 bytes"):
        SSEParser(max_event_bytes=16).feed(b"data: 01234567890123456789", 0.0)


def test_too_many_events_are_refused() -> None:
    with pytest.raises(SSEError, match="more than 2 SSE events"):
        SSEParser(max_events=2).feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\n", 0.0)
