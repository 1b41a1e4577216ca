"""Hop-by-hop header removal (relay_protocol/httpheaders.py)."""

from __future__ import annotations

import pytest

from relay_protocol.httpheaders import HOP_BY_HOP, strip_hop_by_hop


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP) + ["Connection", "KEEP-ALIVE", "Transfer-Encoding", "Upgrade"])
def test_every_hop_by_hop_header_is_dropped_whatever_its_case(name):
    assert strip_hop_by_hop([(name, "x"), ("Host", "a")]) == [("Host", "a")]


def test_end_to_end_headers_keep_their_order_case_and_repeats():
    headers = [("Set-Cookie", "a=1"), ("content-type", "text/plain"), ("Set-Cookie", "b=2"), ("X-Y", "")]
    assert strip_hop_by_hop(headers) == headers


def test_headers_named_by_connection_are_dropped_too():
    headers = [
        ("Connection", "close, X-Secret ,x-other,"),
        ("X-Secret", "1"),
        ("x-other", "2"),
        ("X-Kept", "3"),
    ]
    assert strip_hop_by_hop(headers) == [("X-Kept", "3")]


def test_every_connection_header_counts():
    headers = [("Connection", "X-A"), ("connection", "X-B"), ("X-A", "1"), ("X-B", "2"), ("X-C", "3")]
    assert strip_hop_by_hop(headers) == [("X-C", "3")]


def test_connection_header_after_the_header_it_names_still_drops_it():
    assert strip_hop_by_hop([("X-A", "1"), ("Connection", "x-a")]) == []


def test_an_iterator_is_accepted_and_the_input_list_is_not_modified():
    headers = [("Keep-Alive", "5"), ("A", "1")]
    assert strip_hop_by_hop(iter(headers)) == [("A", "1")]
    assert headers == [("Keep-Alive", "5"), ("A", "1")]


def test_hop_by_hop_list_covers_rfc_9110_and_proxy_connection():
    assert HOP_BY_HOP >= {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"}


def test_pairs_given_as_lists_come_back_as_tuples():
    assert strip_hop_by_hop([["A", "1"], ["TE", "x"]]) == [("A", "1")]


def test_raw_headers_decode_as_utf8_and_fall_back_to_latin1_per_header():
    from relay_protocol.httpheaders import decode_raw_headers

    assert decode_raw_headers([(b"X-A", "é".encode()), (b"X-B", b"1")]) == [("X-A", "é"), ("X-B", "1")]
    assert decode_raw_headers([(b"X-A", "é".encode()), (b"X-B", b"\xe9")]) == [("X-A", "é"), ("X-B", "é")]
    assert decode_raw_headers([]) == []
