"""The relay's logs: one access line per request, agent events, and never a secret.

Each test runs a relay in one ``--log-format``, sends real traffic carrying
every kind of secret the relay sees (the agent token, a bad token, an admin
token, basic-auth credentials, a bearer token and cookies on public requests,
a query string), stops the relay, and reads its whole stderr.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from pathlib import Path

import aiohttp
from metrics.scrape import scrape
from relay_server.logs import JsonFormatter, printable, redact
from relay_server.observer import Observers, RelayObserver
from support.localrelay import Agent, Origin, Relay, create_token, run_refused_agent, start_agent, start_relay
from support.processes import ProcessGroup

BASIC_USER = "alice"
BASIC_PASSWORD = "basic-pw-Secret-7f3a9c"
COOKIE_SECRET = "cookie-Secret-51be0d"
QUERY_SECRET = "query-Secret-c0ffee"
PUBLIC_BEARER = "public-bearer-Secret-9d2e"
BAD_AGENT_TOKEN = "lr_bad-agent-Secret-000000000000000000000"
NOT_A_TOKEN = "plain-bad-Secret-aa11bb22"

#: Fields every JSON line has.
BASE_FIELDS = {"time", "level", "logger", "message"}

#: Fields of a request line.
REQUEST_FIELDS = {
    "tunnel", "stream_id", "method", "path", "status", "duration_ms", "ttfb_ms", "bytes_in", "bytes_out", "client", "error",
}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _traffic(relay: Relay, agent: Agent, client: aiohttp.ClientSession, processes: ProcessGroup, origin: Origin, admin: str) -> None:
    """Requests that carry secrets everywhere a careless log would pick them up."""
    secret_headers = {"Authorization": _basic(BASIC_USER, BASIC_PASSWORD), "Cookie": f"session={COOKIE_SECRET}; theme=dark"}
    async with client.get(f"{agent.public_url}/page?api_key={QUERY_SECRET}", headers=secret_headers) as response:
        assert response.status == 200
        seen = await response.json()
    assert not any(k.lower() == "authorization" for k, _ in seen["headers"]), "the tunnel password reached the origin"
    async with client.post(f"{agent.public_url}/form?token={QUERY_SECRET}", data=b"a=1", headers=secret_headers) as response:
        assert response.status == 200
    async with client.get(f"{agent.public_url}/page", headers={"Authorization": f"Bearer {PUBLIC_BEARER}"}) as response:
        assert response.status == 401  # wrong credentials for this tunnel
    async with client.get(f"{agent.public_url}/page", headers={"Authorization": _basic(BASIC_USER, "wrong-" + BASIC_PASSWORD)}) as response:
        assert response.status == 401
    for bad in (BAD_AGENT_TOKEN, NOT_A_TOKEN):
        code, _, _ = run_refused_agent(processes, relay.port, str(origin.port), bad)
        assert code != 0
    scrape(relay.port, headers={"Authorization": f"Bearer {admin}"})


async def _run(
    log_format: str, processes: ProcessGroup, origin: Origin, client: aiohttp.ClientSession, data_dir: Path
) -> tuple[Relay, Agent, list[str], list[str]]:
    """Run the relay in ``log_format`` through the traffic; (relay, agent, stderr lines, secrets)."""
    relay = start_relay(processes, data_dir, extra=("--log-format", log_format))
    assert relay.token is not None
    admin = create_token(data_dir, "--admin")
    agent = start_agent(
        processes, relay, str(origin.port), relay.token, extra=("--basic-auth", f"{BASIC_USER}:{BASIC_PASSWORD}")
    )
    await _traffic(relay, agent, client, processes, origin, admin)
    agent.process.stop()
    relay.process.stop()
    secrets = [
        relay.token, admin, BAD_AGENT_TOKEN, NOT_A_TOKEN, BASIC_PASSWORD, COOKIE_SECRET, QUERY_SECRET, PUBLIC_BEARER,
        _basic(BASIC_USER, BASIC_PASSWORD).split()[1], relay.token.removeprefix("lr_"), admin.removeprefix("lr_"),
    ]
    return relay, agent, list(relay.process.lines["stderr"]), secrets


def _assert_no_secret(lines: list[str], secrets: list[str]) -> None:
    text = "\n".join(lines)
    assert lines, "the relay logged nothing"
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}...) is in the relay's log"
    assert "Secret" not in text, [line for line in lines if "Secret" in line]


async def test_json_logs_are_one_object_a_line_per_request_and_agent_event_and_carry_no_secret(
    processes: ProcessGroup, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    relay, agent, lines, secrets = await _run("json", processes, origin, client, tmp_path / "data")
    _assert_no_secret(lines, secrets)
    entries = []
    for line in lines:
        entry = json.loads(line)  # every stderr line: nothing unstructured gets through
        assert isinstance(entry, dict) and BASE_FIELDS <= set(entry), line
        entries.append(entry)

    requests = [e for e in entries if e.get("event") == "request"]
    assert len(requests) == 4, requests
    page = next(e for e in requests if e["method"] == "GET" and e["status"] == 200)
    assert REQUEST_FIELDS <= set(page)
    assert page["tunnel"] == agent.name
    assert page["path"] == "/page"  # the query string (secrets live there) is dropped
    assert page["stream_id"] > 0
    assert page["client"] == "127.0.0.1"
    assert page["bytes_out"] > 0 and page["error"] == ""
    assert 0 <= page["ttfb_ms"] <= page["duration_ms"]
    form = next(e for e in requests if e["method"] == "POST")
    assert form["path"] == "/form" and form["bytes_in"] == 3 and form["status"] == 200
    refused = [e for e in requests if e["status"] == 401]
    assert len(refused) == 2 and all(e["error"] == "auth-required" for e in refused)

    events = {e["event"] for e in entries if "event" in e}
    connected = [e for e in entries if e.get("event") == "agent_connected"]
    assert any(e["tunnel"] == agent.name and e["remote"] == "127.0.0.1" for e in connected), connected
    assert any((e.get("token_id") or "").startswith("tok_") for e in connected), connected
    failures = [e for e in entries if e.get("event") == "auth_failed"]
    assert len(failures) == 2 and all(e["remote"] == "127.0.0.1" and e["reason"] for e in failures), failures
    assert "agent_disconnected" in events, sorted(events)


async def test_text_logs_keep_human_lines_add_one_access_line_per_request_and_carry_no_secret(
    processes: ProcessGroup, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    _, agent, lines, secrets = await _run("text", processes, origin, client, tmp_path / "data")
    _assert_no_secret(lines, secrets)
    access = [line for line in lines if " INFO relay_server.access: " in line]
    assert len(access) == 4, "\n".join(lines)
    pattern = rf"127\.0\.0\.1 {agent.name} GET /page 200 [\d.]+ms ttfb=[\d.]+ms in=0 out=\d+ stream=\d+$"
    assert any(re.search(pattern, line) for line in access), "\n".join(access)
    assert any(f"tunnel {agent.name} connected" in line for line in lines), "\n".join(lines)
    assert not any(line.lstrip().startswith("{") for line in lines)


def test_the_last_guard_masks_token_shaped_strings_and_credentials_in_any_line() -> None:
    line = "saw lr_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-x and Authorization: Bearer abcdefgh12345 and Basic YWxpY2U6cHc="
    masked = redact(line)
    assert "lr_AbCd" not in masked and "abcdefgh12345" not in masked and "YWxpY2U6cHc=" not in masked
    assert masked.count("[redacted]") == 3
    assert redact("Basic realm=\"x\" and basic auth required") == "Basic realm=\"x\" and basic auth required"


def test_a_json_record_is_one_line_even_with_newlines_and_a_traceback() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("relay_server.x", logging.ERROR, __file__, 1, "a\nb %s", ("c\r\nd",), sys.exc_info())
    record.fields = {"path": "/a\nb", "event": "request"}  # type: ignore[attr-defined]
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    entry = json.loads(line)
    assert entry["message"] == "a\nb c\r\nd" and entry["path"] == "/a\nb" and "ValueError" in entry["exception"]
    assert {"time", "level", "logger"} <= set(entry) and entry["level"] == "error"


def test_a_path_cannot_forge_a_second_text_line() -> None:
    assert printable("/a\r\nINFO forged") == "/a\\r\\nINFO forged"


def test_an_observer_that_raises_never_stops_the_others() -> None:
    seen: list[str] = []

    class Broken(RelayObserver):
        def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
            raise RuntimeError("observer bug")

    class Counting(RelayObserver):
        def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
            seen.append(limit)

    Observers([Broken(), Counting()]).limit_hit("max_streams", "t", "127.0.0.1")
    assert seen == ["max_streams"]
