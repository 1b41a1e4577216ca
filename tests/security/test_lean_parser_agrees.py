"""The lean front never takes a request aiohttp's parser would refuse or read differently.

The lean front (``relay_server/lean_front.py``) parses with httptools' llhttp;
everything it does not take goes to aiohttp, whose parser decides.  If the two
ever disagreed on a request the lean front takes (aiohttp would answer 400, or
see another method, target or header list, or a body, or a second request),
a request could reach an agent that aiohttp's path would have refused: a way
around the relay's request-integrity rules.  So every request the lean reader
accepts is held against aiohttp's own parser, over generated heads full of the
bytes that usually split parsers (CTLs, bare LF, obs-fold, doubled headers,
CL/TE, odd targets and versions).
"""

from __future__ import annotations

import asyncio

from aiohttp._http_parser import HttpRequestParser
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_server.lean_front import PlainRequestReader


class _Protocol:
    """What aiohttp's parser asks of its protocol (nothing, for heads)."""

    transport = None

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def aiohttp_reading(data: bytes) -> tuple | None:
    """(method, path, raw headers, should_close, body seen, tail) as aiohttp parses ``data``; None if it refuses."""
    parser = HttpRequestParser(_Protocol(), _LOOP, 2**16, max_line_size=8190, max_field_size=8190)
    try:
        messages, upgraded, tail = parser.feed_data(data)
    except HttpProcessingError:
        return None
    if len(messages) != 1 or upgraded:
        return ("not one message", len(messages), upgraded)
    message, payload = messages[0]
    return (message.method, message.path, list(message.raw_headers), message.should_close, message.version,
            payload.is_eof(), bytes(tail))


#: The loop aiohttp's parser is given (it never runs: parsing a head schedules nothing).
_LOOP = asyncio.new_event_loop()


def mostly(clean: st.SearchStrategy, nasty: st.SearchStrategy) -> st.SearchStrategy:
    """``clean`` nine times in ten, ``nasty`` otherwise: most heads are plain, each with a few odd bytes."""
    return st.integers(0, 9).flatmap(lambda n: nasty if n == 0 else clean)


NAMES = mostly(
    st.sampled_from(["Host", "host", "Content-Type", "User-Agent", "X-A", "x-a", "Accept", "Cookie", "TE", "Keep-Alive",
                     "Connection", "Connection", "X-Forwarded-For", "Authorization"]),
    st.one_of(
        st.sampled_from(["Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Host", "HOST"]),
        st.text(alphabet="abcXYZ-_!#~09 :\t\x00\x7fé\"(", min_size=0, max_size=8),
    ),
)
VALUES = mostly(
    st.sampled_from(["x.localhost", "close", "keep-alive", "Close", " padded ", "a,b", "text/html", "1.2.3.4", ""]),
    st.one_of(
        st.sampled_from(["close, X-A", "upgrade", "0", "5", "chunked", "100-continue", "websocket", "gzip, chunked"]),
        st.text(alphabet="abc 09\t\x00\x01\x7f\x80é\r\n;=,\"", min_size=0, max_size=12),
    ),
)
METHODS = mostly(
    st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "DELETE", "PUT", "PATCH", "PURGE"]),
    st.sampled_from(["CONNECT", "FOO", "get", "GET ", "G\x00T", "PRI", ""]),
)
TARGETS = mostly(
    st.text(alphabet="/ab?=&%09.-~", min_size=1, max_size=12).map(lambda t: "/" + t),
    st.one_of(
        st.sampled_from(["*", "http://x.localhost/", "x.localhost:80", "/a b", "/%zz", "/#f", "/.well-known/acme-challenge/t"]),
        st.text(alphabet="/ab?=&%#09 \t\x00\x7fé", min_size=0, max_size=12),
    ),
)
VERSIONS = mostly(st.just("HTTP/1.1"), st.sampled_from(["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1.10", "HTTP/1"]))
EOL = mostly(st.just("\r\n"), st.sampled_from(["\n", "\r", "\r\r\n"]))
SPACE = mostly(st.just(" "), st.sampled_from(["  ", "\t", ""]))
SEPARATOR = mostly(st.sampled_from([": ", ":"]), st.sampled_from([" : ", ":\t", " :", "\t:"]))
AFTER = mostly(st.just(""), st.sampled_from(["body", "GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\n", "0\r\n\r\n", "G"]))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    parts = [draw(METHODS) + draw(SPACE) + draw(TARGETS) + draw(SPACE) + draw(VERSIONS) + draw(EOL)]
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=6))
    if draw(st.integers(0, 9)):
        headers.insert(draw(st.integers(0, len(headers))), ("Host", "x.localhost"))
    for name, value in headers:
        parts.append(name + draw(SEPARATOR) + value + draw(EOL))
        if draw(st.integers(0, 19)) == 0:
            parts.append(" folded" + draw(EOL))  # obs-fold continuation
    parts.append(draw(EOL))
    parts.append(draw(AFTER))
    return "".join(parts).encode("utf-8", "surrogateescape")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_a_request_the_lean_front_takes_is_one_aiohttp_reads_the_same(data: bytes) -> None:
    taken = PlainRequestReader().read(data)
    if taken is None:
        return  # aiohttp's to judge
    assert aiohttp_reading(data) == (
        taken.method, taken.target, taken.raw, taken.close, (1, 1), True, b""
    ), data


def test_the_generator_reaches_requests_the_lean_front_takes() -> None:
    """The property above is not vacuous: plain requests are taken, and the nasty ones are not."""
    reader = PlainRequestReader
    assert reader().read(b"GET /a?b=1 HTTP/1.1\r\nHost: x.localhost\r\nX-A: 1\r\n\r\n") is not None
    assert reader().read(b"GET / HTTP/1.1\r\nHost: x.localhost\r\nConnection: close\r\n\r\n").close is True
    for refused in (
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # duplicated Host
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",  # any body framing is aiohttp's
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n",  # NUL
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",  # HTTP/1.0
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-A\r\n\r\n",  # names a header
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not complete yet
    ):
        assert reader().read(refused) is None, refused
