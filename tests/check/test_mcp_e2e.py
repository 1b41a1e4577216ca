"""``relay-client check --mcp URL`` through a real relay and agent, against MCP servers that stream, buffer, or want a token."""

from __future__ import annotations

import json

import pytest
from support.localrelay import Relay
from support.processes import ProcessGroup

from check.helpers import public_url, run_check, start_mcp_server, tunnel


def test_mcp_check_passes_on_the_aiohttp_server_and_sees_events_streamed(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_aiohttp.py")
    endpoint = tunnel(processes, relay, port, "mcpgood").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 0, run.describe()
    assert run.lines[0] == f"Checking {endpoint} as a remote MCP server"
    assert run.line("PASS", "server/discover").endswith("a handshake-era server; SDK clients fall back to initialize")
    assert run.line("PASS", "initialize").endswith(", server aiohttp-sample 1.0")
    assert run.line("PASS", "MCP protocol version") == "PASS MCP protocol version: initialize negotiated 2025-11-25, which the SDKs speak"
    assert run.line("PASS", "initialized notification") == "PASS initialized notification: notifications/initialized accepted (202)"
    assert run.line("PASS", "tools/list").startswith("PASS tools/list: 2 tools: add, echo, answered as SSE (3 events) in ")
    assert run.line("PASS", "session") == "PASS session: Mcp-Session-Id issued and accepted on later requests"
    assert run.line("PASS", "ping")
    assert run.line("PASS", "GET stream").startswith("PASS GET stream: opens; its head arrived in ")
    streaming = run.line("PASS", "SSE streaming")
    assert streaming.startswith("PASS SSE streaming: tools/list: events arrived as sent (the stream went on "), streaming
    assert run.results("FAIL") == [] and run.results("WARN") == [], run.describe()


def test_mcp_check_fails_on_a_server_that_buffers_its_event_stream(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_aiohttp.py", "--buffered")
    endpoint = tunnel(processes, relay, port, "mcpbuffered").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    line = run.line("FAIL", "SSE streaming")
    assert line.startswith("FAIL SSE streaming: tools/list: 3 events arrived together "), line
    assert line.endswith(" ms after the request, as the response ended: the event stream is buffered, not streamed"), line
    assert "flush each event" in run.fix_after("FAIL", "SSE streaming")
    assert run.results("FAIL") == [line], "everything else about the server is fine"


def test_json_report_of_an_mcp_check(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_aiohttp.py", "--buffered")
    endpoint = tunnel(processes, relay, port, "mcpjson").public_url + "/mcp"
    run = run_check("--mcp", endpoint, "--json")
    assert run.returncode == 1, run.describe()
    report = json.loads(run.stdout)
    assert report["mode"] == "mcp" and report["ok"] is False
    failures = [check for check in report["checks"] if check["status"] == "FAIL"]
    assert [check["name"] for check in failures] == ["SSE streaming"]
    assert failures[0]["fix"].startswith("flush each event")


@pytest.mark.parametrize("json_response", [False, True], ids=["sse-answers", "json-answers"])
def test_mcp_check_passes_on_the_official_sdk_server(processes: ProcessGroup, relay: Relay, json_response: bool) -> None:
    port = start_mcp_server(processes, "mcp_sdk.py", *(["--json-response"] if json_response else []))
    name = "sdkjson" if json_response else "sdksse"
    endpoint = tunnel(processes, relay, port, name, "--host-header", "rewrite").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 0, run.describe()
    assert run.line("PASS", "server/discover").startswith("PASS server/discover: speaks 2026-07-28 (stateless), server sdk-sample")
    assert run.line("PASS", "initialize")
    assert run.line("PASS", "MCP protocol version") == "PASS MCP protocol version: initialize negotiated 2025-11-25, which the SDKs speak"
    assert run.line("PASS", "session") == "PASS session: Mcp-Session-Id issued and accepted on later requests"
    assert run.line("PASS", "tools/list").startswith("PASS tools/list: 2 tools: add, echo, answered as ")
    assert run.line("PASS", "tools/list (2026-07-28)").startswith("PASS tools/list (2026-07-28): 2 tools: add, echo, ")
    assert run.line("PASS", "ping")
    assert run.results("FAIL") == [], run.describe()
    if json_response:
        assert run.line("PASS", "SSE streaming") == "PASS SSE streaming: the server answered with JSON, not SSE, so nothing can be held back"
    else:
        # One event per answer, sent at once: nothing to time, and the report says so instead of guessing.
        assert run.line("WARN", "SSE streaming").startswith("WARN SSE streaming: not observable")


def test_sdk_server_behind_a_tunnel_without_host_rewrite_is_told_about_it(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_sdk.py")
    endpoint = tunnel(processes, relay, port, "sdkhost").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "MCP endpoint") == f"FAIL MCP endpoint: POST {endpoint} answered 421"
    fix = run.fix_after("FAIL", "MCP endpoint")
    assert fix.startswith(f"your local server rejects the public Host header (sdkhost.localhost:{relay.port})")
    assert "--host-header rewrite" in fix


def test_401_with_metadata_on_the_public_url_passes_the_discovery_checks(processes: ProcessGroup, relay: Relay) -> None:
    base = public_url(relay, "mcpauth")
    port = start_mcp_server(processes, "mcp_aiohttp.py", "--auth", base)
    endpoint = tunnel(processes, relay, port, "mcpauth").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 0, run.describe()
    assert run.line("WARN", "authorization").startswith("WARN authorization: server/discover answered 401")
    metadata = f"{base}/.well-known/oauth-protected-resource/mcp"
    assert run.line("PASS", "WWW-Authenticate") == f"PASS WWW-Authenticate: Bearer with resource_metadata {metadata}"
    assert run.line("PASS", "protected resource metadata") == f"PASS protected resource metadata: served at {metadata}"
    assert run.line("PASS", "metadata resource") == f"PASS metadata resource: resource {endpoint} is the public URL"
    assert run.line("PASS", "authorization servers") == f"PASS authorization servers: {base}"


def test_401_with_metadata_naming_localhost_fails_and_suggests_rewriting(processes: ProcessGroup, relay: Relay) -> None:
    base = public_url(relay, "mcplocal")
    port = start_mcp_server(processes, "mcp_aiohttp.py", "--auth", base, "--resource", "http://localhost:8000/mcp")
    endpoint = tunnel(processes, relay, port, "mcplocal").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "metadata resource") == (
        "FAIL metadata resource: resource is http://localhost:8000/mcp (your machine, which clients cannot reach), "
        f"not the public URL {endpoint}"
    )
    assert "--rewrite-urls" in run.fix_after("FAIL", "metadata resource")


def test_mcp_check_of_a_url_without_mcp_says_what_to_serve(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_aiohttp.py")
    endpoint = tunnel(processes, relay, port, "mcpwrongpath").public_url + "/not-mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "initialize").startswith("FAIL initialize: failed: HTTP 404")
    assert "Streamable HTTP" in run.fix_after("FAIL", "initialize")


def test_mcp_check_of_an_offline_tunnel_names_the_relays_reason(relay: Relay) -> None:
    endpoint = public_url(relay, "mcpnobody") + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "MCP endpoint") == f"FAIL MCP endpoint: POST {endpoint} answered 502"
    assert run.fix_after("FAIL", "MCP endpoint").startswith("the relay has no agent for this name")


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18"])
def test_every_older_handshake_version_the_sdks_speak_passes(processes: ProcessGroup, relay: Relay, version: str) -> None:
    port = start_mcp_server(processes, "mcp_aiohttp.py", "--answer-version", version)
    endpoint = tunnel(processes, relay, port, f"mcpv{version.replace('-', '')}").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 0, run.describe()
    assert run.line("PASS", "MCP protocol version").startswith(f"PASS MCP protocol version: initialize negotiated {version}, ")
    assert run.line("PASS", "tools/list")


def test_a_protocol_version_no_sdk_speaks_fails(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_aiohttp.py", "--answer-version", "2023-01-01")
    endpoint = tunnel(processes, relay, port, "mcpvbad").public_url + "/mcp"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "MCP protocol version") == (
        "FAIL MCP protocol version: initialize answered protocolVersion '2023-01-01', which no current SDK speaks"
    )


def test_a_server_speaking_only_the_old_http_sse_transport_is_named_as_such(processes: ProcessGroup, relay: Relay) -> None:
    port = start_mcp_server(processes, "mcp_sdk.py", "--sse")
    endpoint = tunnel(processes, relay, port, "sdkoldsse", "--host-header", "rewrite").public_url + "/sse"
    run = run_check("--mcp", endpoint)
    assert run.returncode == 1, run.describe()
    line = run.line("FAIL", "MCP transport")
    assert line.startswith("FAIL MCP transport: only the HTTP+SSE transport of 2024-11-05 (GET opened a stream announcing /messages/")
    assert line.endswith("current clients speak Streamable HTTP")
    assert "streamable-http" in run.fix_after("FAIL", "MCP transport")
