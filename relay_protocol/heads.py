"""Request and response heads: the payloads of OPEN and RESPONSE frames.

Encoded as compact JSON, written with the C string escaper and read with the C
scanner directly (``json.dumps``/``json.loads`` add microseconds of setup per
call, most of a head's cost).  Headers are an ordered list of pairs so
repeated headers such as ``Set-Cookie`` stay separate and in order.  Decoding validates every field: a
head is the one place where a peer's text reaches an HTTP stack, so CR, LF and
NUL are refused outright (no header injection).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # C escaper, ensure_ascii=False

from relay_protocol.errors import RemoteProtocolError
from relay_protocol.limits import MAX_HEAD_SIZE, MAX_HEADER_COUNT

Headers = list[tuple[str, str]]

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TCHARS + r"\Z")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
#: Every header name at once, joined by "\n": the fast path's single check (a name with
#: "\n" in it shows up in the count of lines, so cannot slip through).
_TOKEN_LINES = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z\n]+\Z")
_FORBIDDEN_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")

#: The C scanner behind ``json.loads`` without its per-call setup (encoding sniffing, two
#: whitespace regexes); anything it does not take whole goes through ``json.loads``.
_scan = json.JSONDecoder().scan_once


@dataclass(slots=True)
class RequestHead:
    """What the relay tells the agent about a public request."""

    method: str
    target: str
    headers: Headers = field(default_factory=list)
    #: Client address as the relay saw it; informational (the inspector shows it).
    remote_addr: str = ""
    #: "websocket" when the public client asked to upgrade: the stream then carries
    #: websocket messages (``wsmessages``) once the agent answers 101.
    upgrade: str = ""

    def encode(self) -> bytes:
        """JSON payload for an OPEN frame (the bytes ``json.dumps`` gives with compact separators)."""
        upgrade = f',"u":{encode_basestring(self.upgrade)}' if self.upgrade else ""
        return (
            f'{{"m":{encode_basestring(self.method)},"t":{encode_basestring(self.target)},'
            f'"h":[{_flat_json(self.headers)}],"r":{encode_basestring(self.remote_addr)}{upgrade}}}'
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> RequestHead:
        """Parse and validate an OPEN payload; anything off is the peer's fault."""
        obj = _load(payload)
        method, target, remote, upgrade = obj.get("m"), obj.get("t"), obj.get("r", ""), obj.get("u", "")
        if not isinstance(method, str) or not _TOKEN.match(method):
            raise RemoteProtocolError(f"invalid request method {method!r}")
        if not isinstance(target, str) or not target or _FORBIDDEN_IN_TARGET.search(target):
            raise RemoteProtocolError("invalid request target")
        if not isinstance(remote, str):
            raise RemoteProtocolError("invalid remote address")
        if upgrade not in ("", "websocket"):
            raise RemoteProtocolError(f"unsupported upgrade {upgrade!r:.40}")
        return cls(method, target, _headers(obj.get("h")), remote, upgrade)


@dataclass(slots=True)
class ResponseHead:
    """What the agent tells the relay about the local server's answer."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=list)

    def encode(self) -> bytes:
        """JSON payload for a RESPONSE frame (the bytes ``json.dumps`` gives with compact separators)."""
        return f'{{"s":{int(self.status)},"r":{encode_basestring(self.reason)},"h":[{_flat_json(self.headers)}]}}'.encode()

    @classmethod
    def decode(cls, payload: bytes) -> ResponseHead:
        """Parse and validate a RESPONSE payload."""
        obj = _load(payload)
        status, reason = obj.get("s"), obj.get("r", "")
        if type(status) is not int or not 100 <= status <= 999:
            raise RemoteProtocolError(f"invalid response status {status!r}")
        if not isinstance(reason, str) or _FORBIDDEN_IN_VALUE.search(reason):
            raise RemoteProtocolError("invalid response reason")
        return cls(status, reason, _headers(obj.get("h")))


def _clean(text: str) -> bool:
    """No CR, LF or NUL in ``text`` (three C scans: cheaper than the regex on a short head)."""
    return "\r" not in text and "\n" not in text and "\x00" not in text


def _flat_json(headers: Headers) -> str:
    """The headers as the inside of a flat JSON list: name, value, name, value..."""
    return ",".join([f"{encode_basestring(name)},{encode_basestring(value)}" for name, value in headers])


def _load(payload: bytes) -> dict:
    if len(payload) > MAX_HEAD_SIZE:
        raise RemoteProtocolError(f"head of {len(payload)} bytes exceeds the limit of {MAX_HEAD_SIZE}")
    try:
        text = payload.decode()
        obj, end = _scan(text, 0)
        if end == len(text) and type(obj) is dict:
            return obj
    except (ValueError, UnicodeDecodeError, StopIteration, RecursionError):
        pass  # json.loads below says what is wrong, exactly as it always did
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RemoteProtocolError(f"head is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("head must be a JSON object")
    return obj


def _headers(flat: object) -> Headers:
    if not isinstance(flat, list) or len(flat) % 2:
        raise RemoteProtocolError("head headers must be a flat list of name/value pairs")
    if len(flat) > 2 * MAX_HEADER_COUNT:
        raise RemoteProtocolError(f"more than {MAX_HEADER_COUNT} headers")
    names, values = flat[0::2], flat[1::2]
    try:
        # Fast path: all names and all values checked by one regex each (C loops, not Python).
        joined = "\n".join(names)  # a "\n" inside a name shows up in the count: refused below
        if (
            _TOKEN_LINES.match(joined)
            and joined.count("\n") == len(names) - 1
            and "" not in names
            and _clean("".join(values))
        ):
            return list(zip(names, values))
    except TypeError:  # a name or value that is not a string: the loop below says which
        pass
    pairs: Headers = []
    it = iter(flat)
    for name, value in zip(it, it):
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise RemoteProtocolError(f"invalid header name {name!r:.80}")
        if not isinstance(value, str) or _FORBIDDEN_IN_VALUE.search(value):
            raise RemoteProtocolError(f"invalid value for header {name!r:.80}")
        pairs.append((name, value))
    return pairs
