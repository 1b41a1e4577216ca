"""``check --mcp``: talk to a remote MCP server as the SDK clients do, and report what a client would hit.

Order, as an SDK client in auto mode goes: ``server/discover`` (2026-07-28,
stateless), then the ``initialize`` handshake (2025-11-25 and earlier) with
its session, ``notifications/initialized``, ``tools/list`` and ``ping``, the
optional GET stream, and ``tools/list`` the stateless way. A 401 turns the run
into the authorization-discovery checks. Every SSE answer's event timings
feed the "not buffered" verdict at the end.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict

from relay_client.check import mcp_wire as wire
from relay_client.check import oauth
from relay_client.check.http import Fetcher, FetchError, Stream, explain_status, media_type
from relay_client.check.limits import GET_STREAM_PROBE, MAX_MCP_BYTES, MAX_SMALL_BYTES, SSE_LINGER
from relay_client.check.report import Check, Report, Status, failed, passed, warned
from relay_client.check.sse import SSEError, SSEParser
from relay_client.check.urls import host_of, is_machine_local, origin, with_origin

_SERVE_FIX = (
    "serve MCP Streamable HTTP at this URL: POST JSON-RPC with Accept: application/json, text/event-stream "
    "(Python SDK: mcp.run(transport='streamable-http'))"
)


class McpCheck:
    """One ``check --mcp`` run against one endpoint."""

    def __init__(self, fetcher: Fetcher, endpoint: str, report: Report) -> None:
        self.fetcher = fetcher
        self.endpoint = endpoint
        self.report = report
        self.timings: list[wire.Timing] = []
        self._next_id = 0

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def run(self) -> None:
        """Every MCP check, in the order a client meets them."""
        if is_machine_local(host_of(self.endpoint)):
            self.report.add(
                warned(
                    "public URL",
                    f"{self.endpoint} is on your machine; remote clients cannot reach it",
                    "check the public URL that relay-client http prints instead",
                )
            )
        discover = await self._post_or_fail("server/discover", wire.modern_params(), wire.modern_headers("server/discover"))
        if discover is None or await self._stopped(discover):
            return
        modern, discover_check = self._judge_discover(discover)
        at = len(self.report.checks)
        init = await self._post_or_fail("initialize", wire.initialize_params(), wire.base_headers())
        if init is None or await self._stopped(init):
            return
        handshake = await self._handshake(init, modern is not None)
        if modern is None and not handshake:
            # Neither era answered: "server/discover not offered" would only blur the initialize failure.
            await self._legacy_transport_probe()
            return
        self.report.checks.insert(at, discover_check)
        if modern is not None:
            await self._modern_tools(modern)
        self.report.add(wire.streaming_verdict(self.timings))

    # -- one POST -----------------------------------------------------------

    async def post(self, label: str, message: dict[str, Any], headers: dict[str, str]) -> wire.Exchange:
        """POST one JSON-RPC message; read its JSON or SSE answer (bounded), timing SSE events."""
        request_id = message.get("id")
        async with self.fetcher.open(
            "POST", self.endpoint, limit=MAX_MCP_BYTES, headers=headers, body=wire.encode(message), follow_redirects=False
        ) as stream:
            exchange = wire.Exchange(
                label, stream.status, stream.content_type, CIMultiDict(stream.headers), sent_at=stream.sent_at, head_at=stream.head_at
            )
            if exchange.is_sse and 200 <= stream.status < 300:
                await self._read_sse(stream, exchange, request_id)
                arrivals = tuple(event.arrived for event in exchange.events)
                self.timings.append(wire.Timing(label, exchange.sent_at, exchange.end_at, arrivals, exchange.left_open))
            else:
                data = await stream.read()
                exchange.end_at = time.monotonic()
                exchange.body_excerpt = data[:512]
                if stream.content_type == "application/json" and data:
                    messages, problem = wire.parse_json_body(data)
                    exchange.response = wire.find_response(messages, request_id) if request_id is not None else None
                    if problem and 200 <= stream.status < 300:
                        exchange.problem = problem
                elif 200 <= stream.status < 300 and request_id is not None and stream.status != 202:
                    exchange.problem = (
                        f"answered {stream.status} with {stream.content_type or 'no Content-Type'}, not JSON or an event stream"
                    )
            if 200 <= exchange.status < 300 and request_id is not None and exchange.response is None and not exchange.problem:
                exchange.problem = f"no JSON-RPC response with id {request_id} in the answer"
            return exchange

    async def _read_sse(self, stream: Stream, exchange: wire.Exchange, request_id: Any) -> None:
        parser = SSEParser()
        linger_until: float | None = None
        try:
            while True:
                item = await stream.next_chunk(until=linger_until)
                if item is None:
                    exchange.left_open = True
                    break
                arrived, chunk = item
                if not chunk:
                    break
                for event in parser.feed(chunk, arrived):
                    if exchange.response is None:
                        exchange.response = wire.find_response(wire.parse_event_data([event]), request_id)
                        if exchange.response is not None:
                            linger_until = time.monotonic() + SSE_LINGER
        except SSEError as exc:
            exchange.problem = f"the event stream broke a limit: {exc}"
        except FetchError:
            if exchange.response is None:
                raise
            exchange.left_open = True
        exchange.end_at = time.monotonic()
        exchange.events = parser.events

    async def _post_or_fail(self, method: str, params: dict[str, Any] | None, headers: dict[str, str]) -> wire.Exchange | None:
        """POST a request; on no usable answer, a FAIL line and None."""
        message = wire.request(self._id(), method, params)
        try:
            return await self.post(method, message, headers)
        except FetchError as exc:
            self.report.add(failed("MCP endpoint", str(exc), exc.fix or _SERVE_FIX))
            return None

    async def _stopped(self, exchange: wire.Exchange) -> bool:
        """Handle answers that end the run: 401 (authorization checks), redirects, relay errors, Host refusals."""
        if exchange.status == 401:
            await self._authorization(exchange)
            return True
        if 300 <= exchange.status < 400:
            location = exchange.headers.get("Location", "?")
            self.report.add(
                failed(
                    "MCP endpoint",
                    f"POST answered {exchange.status}, a redirect to {location}; clients do not follow it",
                    f"use {location} as the endpoint (often a trailing-slash difference)",
                )
            )
            return True
        explanation = explain_status(exchange.status, exchange.headers, exchange.body_excerpt, self.endpoint)
        if exchange.status >= 400 and explanation and exchange.status != 404:
            self.report.add(failed("MCP endpoint", f"POST {self.endpoint} answered {exchange.status}", explanation))
            return True
        return False

    # -- the stateless era ---------------------------------------------------

    def _judge_discover(self, exchange: wire.Exchange) -> tuple[str | None, Check]:
        """The modern version to use (if the server speaks one), and the ``server/discover`` line."""
        name = "server/discover"
        result = exchange.result
        if result is None:
            reason = exchange.error_text()
            return None, passed(name, f"not offered ({reason}): a handshake-era server; SDK clients fall back to initialize")
        supported = result.get("supportedVersions")
        if not isinstance(supported, list):
            return None, warned(
                name, "answered without supportedVersions; clients fall back to initialize", "return supportedVersions in the result"
            )
        mutual = [version for version in wire.MODERN_VERSIONS if version in supported]
        if not mutual:
            return None, passed(name, f"advertises only {', '.join(map(str, supported))}; clients use initialize")
        return mutual[-1], passed(name, f"speaks {mutual[-1]} (stateless){_server_name(result)}, answered as {_how(exchange)}")

    async def _modern_tools(self, version: str) -> None:
        name = f"tools/list ({version})"
        params = wire.modern_params(version=version)
        params["_meta"]["progressToken"] = "check-tools"
        try:
            exchange = await self.post(name, wire.request(self._id(), "tools/list", params), wire.modern_headers("tools/list", version))
        except FetchError as exc:
            self.report.add(failed(name, str(exc), exc.fix))
            return
        tools = wire.tool_names(exchange.result)
        if tools is None:
            self.report.add(
                failed(name, f"failed: {exchange.error_text()}", "answer tools/list carrying the 2026-07-28 _meta envelope and headers")
            )
        else:
            self.report.add(passed(name, f"{_tools(tools)}, answered as {_how(exchange)}"))

    # -- the handshake era ---------------------------------------------------

    async def _handshake(self, init: wire.Exchange, modern: bool) -> bool:
        """initialize, session, initialized, tools/list, ping, GET stream; True if the handshake worked."""
        result = init.result
        if result is None:
            if modern:
                self.report.add(
                    warned(
                        "initialize",
                        f"refused ({init.error_text()}): the server speaks only 2026-07-28, so clients from before that "
                        "revision cannot connect",
                        "also serve the initialize handshake if older clients matter (SDK servers do by default)",
                    )
                )
            else:
                explanation = explain_status(init.status, init.headers, init.body_excerpt, self.endpoint)
                if not explanation and init.status == 404 and urlsplit(self.endpoint).path in ("", "/"):
                    explanation = f"MCP endpoints usually live at a path: try {self.endpoint.rstrip('/')}/mcp"
                self.report.add(failed("initialize", f"failed: {init.error_text()}", explanation or _SERVE_FIX))
            return False
        self.report.add(passed("initialize", f"answered as {_how(init)}{_server_name(result)}"))
        version_check = wire.judge_version(result.get("protocolVersion"))
        self.report.add(version_check)
        version = str(result.get("protocolVersion")) if version_check.status is Status.PASS else wire.LATEST_HANDSHAKE
        session_id = init.headers.get(wire.SESSION_HEADER)
        headers = wire.session_headers(version, session_id)

        await self._initialized(headers)
        tools = await self._tools(headers)
        self._judge_session(session_id, tools)
        await self._ping(headers)
        if session_id:
            await self._get_stream(headers)
            await self._close_session(headers)
        return True

    async def _initialized(self, headers: dict[str, str]) -> None:
        name = "initialized notification"
        try:
            exchange = await self.post(name, wire.notification("notifications/initialized"), headers)
        except FetchError as exc:
            self.report.add(failed(name, str(exc), exc.fix))
            return
        if 200 <= exchange.status < 300:
            self.report.add(passed(name, f"notifications/initialized accepted ({exchange.status})"))
        else:
            self.report.add(
                failed(name, f"notifications/initialized answered {exchange.status}", "answer a notification POST with 202 Accepted")
            )

    async def _tools(self, headers: dict[str, str]) -> wire.Exchange | None:
        name = "tools/list"
        params = {"_meta": {"progressToken": "check-tools"}}
        try:
            exchange = await self.post(name, wire.request(self._id(), "tools/list", params), headers)
        except FetchError as exc:
            self.report.add(failed(name, str(exc), exc.fix))
            return None
        tools = wire.tool_names(exchange.result)
        if tools is None:
            self.report.add(failed(name, f"failed: {exchange.error_text()}", "answer tools/list with {\"tools\": [...]}"))
        else:
            self.report.add(passed(name, f"{_tools(tools)}, answered as {_how(exchange)}"))
        return exchange

    def _judge_session(self, session_id: str | None, tools: wire.Exchange | None) -> None:
        name = "session"
        if not session_id:
            self.report.add(passed(name, "no Mcp-Session-Id issued: a stateless server, which the spec allows"))
        elif tools is not None and tools.result is not None:
            self.report.add(passed(name, f"{wire.SESSION_HEADER} issued and accepted on later requests"))
        elif tools is not None:
            self.report.add(
                failed(
                    name,
                    f"a request carrying the {wire.SESSION_HEADER} it issued was refused ({tools.error_text()})",
                    "keep sessions across requests (one server process, or sticky routing), or run the server stateless",
                )
            )

    async def _ping(self, headers: dict[str, str]) -> None:
        name = "ping"
        try:
            exchange = await self.post(name, wire.request(self._id(), "ping"), headers)
        except FetchError as exc:
            self.report.add(failed(name, str(exc), exc.fix))
            return
        if exchange.result is not None:
            self.report.add(passed(name, f"answered in {(exchange.end_at - exchange.sent_at) * 1000:.0f} ms"))
        else:
            self.report.add(failed(name, f"failed: {exchange.error_text()}", "answer ping with an empty result {}"))

    async def _get_stream(self, headers: dict[str, str]) -> None:
        """The optional server-to-client GET stream opens promptly (or is declined with 405)."""
        name = "GET stream"
        get_headers = {key: value for key, value in headers.items() if key != "Content-Type"}
        get_headers["Accept"] = "text/event-stream"
        try:
            async with asyncio.timeout(GET_STREAM_PROBE):
                async with self.fetcher.open("GET", self.endpoint, limit=MAX_SMALL_BYTES, headers=get_headers) as stream:
                    waited = (stream.head_at - stream.sent_at) * 1000
                    if stream.status == 405:
                        self.report.add(passed(name, "not offered (405), which the spec allows"))
                    elif stream.status == 200 and stream.content_type == "text/event-stream":
                        self.report.add(passed(name, f"opens; its head arrived in {waited:.0f} ms"))
                    else:
                        self.report.add(
                            warned(name, f"GET answered {stream.status} ({stream.content_type or 'no type'})", "answer 405 or open an event stream")
                        )
        except TimeoutError:
            self.report.add(
                warned(
                    name,
                    f"the GET stream's head did not arrive within {GET_STREAM_PROBE:g}s: something holds it until data flows",
                    "send the response head at once (flush headers) for text/event-stream",
                )
            )
        except FetchError as exc:
            self.report.add(warned(name, str(exc)))

    async def _close_session(self, headers: dict[str, str]) -> None:
        """End the session we opened (a courtesy; the answer is not judged)."""
        delete_headers = {key: value for key, value in headers.items() if key in (wire.SESSION_HEADER, wire.VERSION_HEADER)}
        try:
            await self.fetcher.fetch("DELETE", self.endpoint, limit=MAX_SMALL_BYTES, headers=delete_headers)
        except FetchError:
            pass

    async def _legacy_transport_probe(self) -> None:
        """Tell a server that speaks only the 2024-11-05 HTTP+SSE transport from one that is not MCP at all."""
        try:
            async with asyncio.timeout(GET_STREAM_PROBE):
                async with self.fetcher.open("GET", self.endpoint, limit=MAX_SMALL_BYTES, headers={"Accept": "text/event-stream"}) as stream:
                    if stream.status != 200 or stream.content_type != "text/event-stream":
                        return
                    parser = SSEParser()
                    while not parser.events:
                        item = await stream.next_chunk()
                        if item is None or not item[1]:
                            return
                        parser.feed(item[1], item[0])
        except (TimeoutError, FetchError, SSEError):
            return
        if parser.events[0].event == "endpoint":
            self.report.add(
                failed(
                    "MCP transport",
                    f"only the HTTP+SSE transport of 2024-11-05 (GET opened a stream announcing {parser.events[0].data}); "
                    "current clients speak Streamable HTTP",
                    _SERVE_FIX,
                )
            )

    # -- 401 ---------------------------------------------------------------

    async def _authorization(self, exchange: wire.Exchange) -> None:
        """The OAuth discovery a client does on 401: challenge, then protected-resource metadata."""
        self.report.add(
            warned(
                "authorization",
                f"{exchange.label} answered 401: the server wants a token, so the protocol checks were skipped",
                "expected for a server behind OAuth; the discovery checks below are what clients need",
            )
        )
        challenge, metadata_url = oauth.check_challenge(exchange.headers.get("WWW-Authenticate"), self.endpoint)
        self.report.add(challenge)
        public = origin(self.endpoint)
        candidates: list[str] = []
        if metadata_url:
            local = is_machine_local(host_of(metadata_url)) and origin(metadata_url) != public
            candidates.append(with_origin(metadata_url, public) if local else metadata_url)
        candidates.extend(oauth.well_known_urls(self.endpoint))
        tried: list[str] = []
        for url in dict.fromkeys(candidates):
            tried.append(url)
            try:
                answer = await self.fetcher.fetch("GET", url, limit=MAX_SMALL_BYTES, headers={"Accept": "application/json"})
            except FetchError:
                continue
            document = oauth.parse_metadata(answer.body) if answer.status == 200 else None
            if document is not None:
                self.report.extend(oauth.check_metadata(document, url, self.endpoint))
                return
        self.report.add(
            failed(
                "protected resource metadata",
                f"not served (tried {', '.join(tried)})",
                f'serve JSON with "resource": "{self.endpoint}" and "authorization_servers" at {oauth.well_known_urls(self.endpoint)[0]}',
            )
        )


def _how(exchange: wire.Exchange) -> str:
    """``SSE (2 events) in 12 ms`` or ``JSON in 3 ms``."""
    took = (exchange.end_at - exchange.sent_at) * 1000
    if exchange.is_sse:
        return f"SSE ({len(exchange.events)} event{'s' if len(exchange.events) != 1 else ''}) in {took:.0f} ms"
    return f"{media_type(exchange.content_type) or 'JSON'} in {took:.0f} ms"


def _server_name(result: dict[str, Any]) -> str:
    info = result.get("serverInfo")
    if not isinstance(info, dict):
        meta = result.get("_meta")
        info = meta.get(wire.SERVER_INFO_META) if isinstance(meta, dict) else None
    if not isinstance(info, dict) or not info.get("name"):
        return ""
    version = f" {info['version']}" if info.get("version") else ""
    return f", server {info['name']}{version}"


def _tools(names: list[str]) -> str:
    if not names:
        return "no tools"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"{len(names)} tool{'s' if len(names) != 1 else ''}: {shown}"
