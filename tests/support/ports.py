"""Free TCP ports on 127.0.0.1 (bind port 0, read the number, release it)."""

from __future__ import annotations

import socket
from collections import deque

#: The only address the tests ever listen on or connect to.
LOOPBACK = "127.0.0.1"


#: Ports handed out lately: the kernel may give a released port again at once, and two ports asked
#: for one process (its http and https listeners, say) must differ.
_RECENT: deque[int] = deque(maxlen=64)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago, and not one handed out lately."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in _RECENT:
            _RECENT.append(port)
            return port
    raise AssertionError("the kernel keeps handing out the same few ports")


def free_port_pair() -> int:
    """A port P such that P and P + 1 were both free a moment ago (two workers' internal ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((LOOPBACK, port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two adjacent free ports on 127.0.0.1")


def port_is_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False
