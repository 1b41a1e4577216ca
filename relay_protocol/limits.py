"""Every size and count the protocol enforces, named once."""

import os

#: Bytes in a frame header: type (1), flags (1), stream id (4), payload length (4).
FRAME_HEADER_SIZE = 10

#: Largest payload one frame may carry; larger claims are a protocol error.
MAX_FRAME_PAYLOAD = 1024 * 1024

#: Body bytes put in one DATA frame; large enough to amortise per-frame costs.
DATA_CHUNK_SIZE = 256 * 1024

#: Largest encoded request or response head (request line + all headers).
MAX_HEAD_SIZE = 256 * 1024

#: Most headers one head may carry.
MAX_HEADER_COUNT = 500

#: Largest HELLO/WELCOME/GOAWAY payload.
MAX_CONTROL_PAYLOAD = 16 * 1024

#: Default receive window of one stream: the most body bytes the peer may send
#: before we give credit back.  Bounds the memory one stream can pin.
DEFAULT_STREAM_WINDOW = 4 * 1024 * 1024

#: Default receive window of the whole connection, over all streams.
DEFAULT_CONNECTION_WINDOW = 32 * 1024 * 1024

#: Largest window a peer may announce or reach through credit (2**31 - 1, as HTTP/2).
MAX_WINDOW = 2**31 - 1

#: Smallest window a peer may announce: below this, streaming would crawl.
MIN_WINDOW = 16 * 1024


def is_valid_window(value: object) -> bool:
    """A window size a peer may announce: an int from MIN_WINDOW to MAX_WINDOW (bool is no int here)."""
    return type(value) is int and MIN_WINDOW <= value <= MAX_WINDOW

#: Default cap on concurrently open streams per connection.
DEFAULT_MAX_STREAMS = 1000

#: Largest stream id; the relay opens odd ids counting up from 1.
MAX_STREAM_ID = 2**31 - 1


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds (under an hour) from the environment, else ``default``.

    Test knobs only (heartbeats, lease TTLs): short values let tests see a
    timeout in seconds; users configure the product through options.
    """
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if 0 < value < 3600 else default
