"""MCP over Streamable HTTP, the parts without I/O: versions, request shapes, answers, the buffering verdict.

Protocol versions the current SDKs speak (read from the official Python SDK
2.x, ``mcp_types/version.py``, and the TypeScript SDK's
``SUPPORTED_PROTOCOL_VERSIONS``):

- handshake era (``initialize`` + ``notifications/initialized``, optional
  ``Mcp-Session-Id``): 2024-11-05 (the era of the old HTTP+SSE transport),
  2025-03-26 (Streamable HTTP appears), 2025-06-18 (``MCP-Protocol-Version``
  header required after initialize), 2025-11-25; the TypeScript SDK also
  still accepts 2024-10-07.
- stateless era: 2026-07-28. No handshake and no session; every request
  carries ``_meta`` (``io.modelcontextprotocol/protocolVersion`` and
  ``.../clientCapabilities``) and the ``MCP-Protocol-Version`` and
  ``Mcp-Method`` headers; ``server/discover`` says what a server speaks;
  ``ping`` is gone.

SDK clients probe ``server/discover`` first and fall back to ``initialize``
on anything but a modern answer, so ``check`` does both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay_client import __version__
from relay_client.check.report import Check, failed, passed, warned
from relay_client.check.sse import Event

HANDSHAKE_VERSIONS = ("2024-10-07", "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
KNOWN_VERSIONS = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)

#: What ``initialize`` offers: the newest handshake version (servers answer with theirs).
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
LATEST_MODERN = MODERN_VERSIONS[-1]

#: From this version on, clients send ``MCP-Protocol-Version`` on every request after initialize.
VERSION_HEADER_SINCE = "2025-06-18"

ACCEPT = "application/json, text/event-stream"
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"

CLIENT_INFO = {"name": "localrelay-check", "version": __version__}

#: An event followed by this much more stream (another event, or the end) was delivered as sent.
STREAM_GAP = 0.1

#: Events that arrive within this window of each other and of the end arrived as one burst.
BURST_WINDOW = 0.1

#: A burst at least this long after the request, holding several events, looks held back.
BUFFERED_DELAY = 0.25


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC request object."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str) -> dict[str, Any]:
    """A JSON-RPC notification object."""
    return {"jsonrpc": "2.0", "method": method}


def initialize_params() -> dict[str, Any]:
    """``initialize`` params offering the newest handshake version."""
    return {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": CLIENT_INFO}


def modern_params(extra: dict[str, Any] | None = None, version: str = LATEST_MODERN) -> dict[str, Any]:
    """Params carrying the 2026-07-28 per-request ``_meta`` envelope."""
    params = dict(extra or {})
    params["_meta"] = {PROTOCOL_VERSION_META: version, CLIENT_CAPABILITIES_META: {}, CLIENT_INFO_META: CLIENT_INFO}
    return params


def base_headers() -> dict[str, str]:
    """Headers of every POST."""
    return {"Accept": ACCEPT, "Content-Type": "application/json"}


def modern_headers(method: str, version: str = LATEST_MODERN) -> dict[str, str]:
    """Headers of a 2026-07-28 request: the version and method routing headers."""
    return {**base_headers(), VERSION_HEADER: version, METHOD_HEADER: method}


def session_headers(version: str, session_id: str | None) -> dict[str, str]:
    """Headers after a handshake: the negotiated version and the session, if any."""
    headers = base_headers()
    headers[VERSION_HEADER] = version
    if session_id:
        headers[SESSION_HEADER] = session_id
    return headers


def encode(message: dict[str, Any]) -> bytes:
    """A message as the POST body."""
    return json.dumps(message, separators=(",", ":")).encode()


@dataclass
class Exchange:
    """One POST and its answer: status, how it came (JSON or SSE), the matching JSON-RPC response, timings."""

    label: str
    status: int
    content_type: str
    headers: Mapping[str, str]
    #: The JSON-RPC response carrying our id (None if none arrived).
    response: dict[str, Any] | None = None
    #: Why the body could not be read or understood.
    problem: str = ""
    events: list[Event] = field(default_factory=list)
    sent_at: float = 0.0
    head_at: float = 0.0
    end_at: float = 0.0
    #: True when the SSE stream was still open when we stopped reading.
    left_open: bool = False
    body_excerpt: bytes = b""

    @property
    def is_sse(self) -> bool:
        """Whether the answer was an event stream."""
        return self.content_type == "text/event-stream"

    @property
    def result(self) -> dict[str, Any] | None:
        """The ``result`` object, when the response is a success."""
        if self.response is None:
            return None
        result = self.response.get("result")
        return result if isinstance(result, dict) else None

    def error_text(self) -> str:
        """The JSON-RPC error (or HTTP-level problem) as one phrase."""
        if self.response is not None and isinstance(self.response.get("error"), dict):
            error = self.response["error"]
            return f"JSON-RPC error {error.get('code')}: {error.get('message')}"
        if self.problem:
            return self.problem
        return f"HTTP {self.status}" + (f" ({self.content_type})" if self.content_type else "")


def find_response(messages: list[Any], request_id: int) -> dict[str, Any] | None:
    """The response (result or error) to ``request_id`` among parsed messages (batches flattened)."""
    for message in messages:
        items = message if isinstance(message, list) else [message]
        for item in items:
            if isinstance(item, dict) and item.get("id") == request_id and ("result" in item or "error" in item):
                return item
    return None


def parse_json_body(body: bytes) -> tuple[list[Any], str]:
    """Messages from a JSON answer, and a problem phrase if it is not JSON."""
    try:
        return [json.loads(body)], ""
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], f"the JSON answer does not parse ({exc})"


def parse_event_data(events: list[Event]) -> list[Any]:
    """JSON-RPC messages carried by SSE events (events without JSON data are skipped)."""
    messages = []
    for event in events:
        if event.event != "message" or not event.data.strip():
            continue
        try:
            messages.append(json.loads(event.data))
        except json.JSONDecodeError:
            continue
    return messages


def judge_version(version: Any) -> Check:
    """The version ``initialize`` returned is one the SDKs speak."""
    if version in HANDSHAKE_VERSIONS:
        note = " (the oldest still negotiated)" if version in ("2024-10-07", "2024-11-05") else ""
        return passed("MCP protocol version", f"initialize negotiated {version}, which the SDKs speak{note}")
    if version in MODERN_VERSIONS:
        return failed(
            "MCP protocol version",
            f"initialize answered {version}, a stateless-era version that is never negotiated by initialize",
            f"answer initialize with one of {', '.join(HANDSHAKE_VERSIONS[1:])} (clients reach {version} through server/discover)",
        )
    return failed(
        "MCP protocol version",
        f"initialize answered protocolVersion {version!r}, which no current SDK speaks",
        f"answer with the client's version if supported, else the newest of {', '.join(HANDSHAKE_VERSIONS[1:])}",
    )


def tool_names(result: dict[str, Any] | None) -> list[str] | None:
    """Tool names from a ``tools/list`` result, or None if it is not one."""
    if result is None or not isinstance(result.get("tools"), list):
        return None
    return [str(tool.get("name")) for tool in result["tools"] if isinstance(tool, dict)]


@dataclass(frozen=True)
class Timing:
    """When an SSE answer's events arrived, relative to its request."""

    label: str
    sent_at: float
    end_at: float
    arrivals: tuple[float, ...]
    left_open: bool = False


def _streamed(timing: Timing) -> float | None:
    """The longest time the stream went on after an event had arrived, if that proves incremental delivery."""
    best = None
    for index, arrived in enumerate(timing.arrivals):
        following = timing.arrivals[index + 1] if index + 1 < len(timing.arrivals) else timing.end_at
        gap = following - arrived
        if gap >= STREAM_GAP and (best is None or gap > best):
            best = gap
    return best


def _buffered(timing: Timing) -> bool:
    """Several events that arrived together, late, right as the response ended."""
    if len(timing.arrivals) < 2 or timing.left_open:
        return False
    first, last = timing.arrivals[0], timing.arrivals[-1]
    return last - first <= BURST_WINDOW and timing.end_at - last <= BURST_WINDOW and first - timing.sent_at >= BUFFERED_DELAY


def streaming_verdict(timings: list[Timing]) -> Check:
    """Whether SSE events reached us as the server sent them."""
    name = "SSE streaming"
    if not timings:
        return passed(name, "the server answered with JSON, not SSE, so nothing can be held back")
    for timing in timings:
        if _buffered(timing):
            delay = (timing.arrivals[0] - timing.sent_at) * 1000
            return failed(
                name,
                f"{timing.label}: {len(timing.arrivals)} events arrived together {delay:.0f} ms after the request, "
                "as the response ended: the event stream is buffered, not streamed",
                "flush each event when it is written (no response buffering or compression for text/event-stream; "
                "behind nginx send X-Accel-Buffering: no); clients see nothing until the end otherwise",
            )
    for timing in timings:
        gap = _streamed(timing)
        if gap is not None:
            return passed(
                name,
                f"{timing.label}: events arrived as sent (the stream went on {gap * 1000:.0f} ms after an event had arrived)",
            )
    return warned(
        name,
        "not observable: every SSE answer was a single event or came in quickly, so buffering cannot be told apart",
        "nothing to fix if your server sends one event per answer; a slow request that streams progress "
        "notifications would make delivery measurable",
    )
