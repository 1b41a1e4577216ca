"""A DNS responder on 127.0.0.1 that answers every A query with 127.0.0.1 (for Pebble's validation).

Pebble resolves the names it validates through ``-dnsserver``; pointing it
here keeps every validation connection on loopback, whatever the name.
AAAA and other queries get an empty NOERROR answer, so only IPv4 is used.
"""

from __future__ import annotations

import socket
import struct
import threading

#: The only address ever answered.
ANSWER_IP = "127.0.0.1"

#: Seconds the serving thread blocks in recvfrom before checking for stop.
POLL = 0.2

#: Largest query we read (plain DNS over UDP without EDNS is at most 512 bytes).
MAX_QUERY = 4096

_TYPE_A = 1


def answer(query: bytes) -> bytes | None:
    """The response to one DNS query, or None if it is not a parseable query."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    pos = 12
    while pos < len(query) and query[pos] != 0:
        pos += 1 + query[pos]
    end = pos + 5
    if end > len(query):
        return None
    question = query[12:end]
    qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
    answers = b""
    if qtype == _TYPE_A:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", _TYPE_A, 1, 0, 4) + socket.inet_aton(ANSWER_IP)
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080  # QR, opcode+RD copied, RA
    header = struct.pack("!HHHHHH", ident, reply_flags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class LoopbackDNS:
    """UDP DNS on 127.0.0.1:port in a daemon thread; ``stop()`` ends it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(POLL)
        self.port: int = self._sock.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` for pebble's ``-dnsserver``."""
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                query, peer = self._sock.recvfrom(MAX_QUERY)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            reply = answer(query)
            if reply is not None:
                self._sock.sendto(reply, peer)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stopping.set()
        self._thread.join(POLL * 10)
        self._sock.close()
