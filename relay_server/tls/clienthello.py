"""Read the server name and ALPN list from a TLS ClientHello, without answering it.

Pure functions over bytes (no sockets): the listener peeks at the first TLS
record and asks ``record_size`` how many bytes that record needs, then
``parse_client_hello`` for what the client wants.  A ClientHello split over
several records (rare; huge hellos only) parses as far as the first record
goes and reports no name, which the caller treats like a client without SNI.
"""

from __future__ import annotations

from dataclasses import dataclass

#: TLS record header: type (1), legacy version (2), length (2).
RECORD_HEADER = 5

#: Largest TLS plaintext record (RFC 8446 section 5.1).
MAX_RECORD = 16384

#: Record content type of handshake messages, and the ClientHello message type.
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01

#: Extension numbers (RFC 6066, RFC 7301).
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16


class NotTLS(ValueError):
    """The peer's first bytes are not a TLS ClientHello (plain HTTP on the TLS port, a scanner)."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the client asked for: a host name (lower case, no trailing dot) and ALPN protocols."""

    server_name: str | None
    alpn: tuple[str, ...] = ()


def record_size(head: bytes) -> int:
    """Total bytes (header included) of the TLS record that starts ``head``; needs 5 bytes."""
    if len(head) < RECORD_HEADER:
        raise ValueError("need the 5-byte record header")
    if head[0] != _HANDSHAKE or head[1] != 3:
        raise NotTLS(f"first bytes {head[:5]!r} are not a TLS handshake record")
    length = int.from_bytes(head[3:5], "big")
    if length == 0 or length > MAX_RECORD:
        raise NotTLS(f"TLS record length {length} is out of range")
    return RECORD_HEADER + length


class _Reader:
    """Bounds-checked cursor over a byte string; running off the end raises IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_client_hello(record: bytes) -> ClientHello:
    """The SNI name and ALPN list of the ClientHello in ``record`` (one whole TLS record)."""
    size = record_size(record)
    body = _Reader(record[RECORD_HEADER:size])
    try:
        if body.uint(1) != _CLIENT_HELLO:
            raise NotTLS("first handshake message is not a ClientHello")
        body.take(3)  # message length: may exceed this record; we read what is here
        body.take(2 + 32)  # legacy_version, random
        body.vector(1)  # legacy_session_id
        body.vector(2)  # cipher_suites
        body.vector(1)  # legacy_compression_methods
        if body.left == 0:
            return ClientHello(None)
        extensions = _Reader(body.vector(2))
    except IndexError:
        return ClientHello(None)  # split over records: no name known
    name: str | None = None
    alpn: tuple[str, ...] = ()
    try:
        while extensions.left:
            kind = extensions.uint(2)
            data = _Reader(extensions.vector(2))
            if kind == _EXT_SERVER_NAME:
                name = _server_name(data)
            elif kind == _EXT_ALPN:
                alpn = _alpn(data)
    except IndexError:
        raise NotTLS("malformed ClientHello extensions") from None
    return ClientHello(name, alpn)


def _server_name(data: _Reader) -> str | None:
    names = _Reader(data.vector(2))
    while names.left:
        kind = names.uint(1)
        value = names.vector(2)
        if kind == 0:  # host_name
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                raise NotTLS("server name is not ASCII") from None
            return text.lower().rstrip(".") or None
    return None


def _alpn(data: _Reader) -> tuple[str, ...]:
    protocols = _Reader(data.vector(2))
    found: list[str] = []
    while protocols.left:
        found.append(protocols.vector(1).decode("ascii", "replace"))
    return tuple(found)
