"""Tokens as a security boundary: expiry, live revocation, admin scope, reserved names.

Real relay and agent processes on 127.0.0.1; tokens are made and revoked with
``relay-server token ...`` run as separate processes, as an operator would.
The sweep that closes revoked/expired tunnels is also driven directly, with
fake tunnels, for the cases a process test cannot stage (an unreadable store).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from relay_protocol.errors import ErrorCode
from relay_server.registry import Owner
from relay_server.token_watch import TokenWatcher
from relay_server.tokens import TokenStore
from support.clients import make_client
from support.localrelay import (
    Origin,
    Relay,
    create_token,
    relay_cli,
    run_refused_agent,
    start_agent,
    start_origin,
    start_relay,
)
from support.processes import ManagedProcess, ProcessGroup

#: Seconds a live agent gets to be told its token is gone and to exit (the relay looks every second).
DISCONNECT_WITHIN = 15.0

AUTH_EXIT = 3
NAME_EXIT = 4


@pytest.fixture(scope="module")
def relay(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Relay:
    """One relay requiring tokens, for this module."""
    return start_relay(module_processes, tmp_path_factory.mktemp("tokens-relay"))


@pytest.fixture(scope="module")
def origin(module_processes: ProcessGroup) -> Origin:
    """The local server behind every agent here."""
    return start_origin(module_processes)


@pytest.fixture
async def client() -> aiohttp.ClientSession:
    async with make_client(timeout=30.0) as session:
        yield session


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _token_id(relay: Relay, label: str) -> str:
    """The id ``token list`` shows for the token with this label."""
    listing = relay_cli("token", "list", "--data-dir", str(relay.data_dir))
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if line.rstrip().endswith(label)]
    return re.search(r"\btok_[0-9a-f]+\b", row).group(0)


def _row(relay: Relay, label: str) -> list[str]:
    """The ``token list`` row of this label, split on the column gaps."""
    listing = relay_cli("token", "list", "--data-dir", str(relay.data_dir)).stdout
    [row] = [line for line in listing.splitlines() if line.rstrip().endswith(label)]
    return re.split(r"\s{2,}", row.strip())


async def _status(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url + "/ping") as response:
        await response.read()
        return response.status


def _ended_with_one_error(process: ManagedProcess, timeout: float) -> tuple[int, str]:
    """Wait for an agent to exit by itself: its exit status and its single ``relay-client: error:`` line."""
    code = process.wait_exit(timeout)
    output = process.output()
    errors = [line for line in process.lines["stderr"] if line.startswith("relay-client: error:")]
    assert len(errors) == 1, f"expected one 'relay-client: error:' line\n{output}"
    assert "Traceback" not in output, output
    return code, errors[0]


# ------------------------------------------------------------------ revocation


async def test_revoking_a_token_disconnects_its_live_agent_which_exits_with_the_auth_code(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    label = _unique("revoked-live")
    doomed = start_agent(processes, relay, str(origin.port), create_token(relay.data_dir, "--label", label))
    bystander = start_agent(processes, relay, str(origin.port), create_token(relay.data_dir, "--label", _unique("kept")))
    assert await _status(client, doomed.public_url) == 200
    token_id = _token_id(relay, label)

    revoked = relay_cli("token", "revoke", token_id, "--data-dir", str(relay.data_dir))
    assert revoked.returncode == 0, revoked.stderr

    code, error = _ended_with_one_error(doomed.process, DISCONNECT_WITHIN)
    assert code == AUTH_EXIT
    assert f"token {token_id} was revoked" in error
    assert doomed.process.count(r"^Forwarding ") == 1  # no reconnect attempt that got through
    assert "reconnecting" not in doomed.process.output()
    assert await _status(client, doomed.public_url) == 502  # the name is no longer served
    assert bystander.process.returncode is None
    assert await _status(client, bystander.public_url) == 200


async def test_a_token_expiring_while_its_agent_is_connected_disconnects_it(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    label = _unique("expiring-live")
    agent = start_agent(processes, relay, str(origin.port), create_token(relay.data_dir, "--expires", "1h", "--label", label))
    assert await _status(client, agent.public_url) == 200
    token_id = _token_id(relay, label)

    # Let time pass: the token now expires 2 s from now.  The store is replaced the
    # way the CLI does it; at that moment the token is still valid, so only the
    # clock (no further file change) can end the tunnel.
    store_file = relay.data_dir / "tokens.json"
    data = json.loads(store_file.read_text())
    [entry] = [t for t in data["tokens"] if t["id"] == token_id]
    entry["expires"] = time.time() + 2.0
    replacement = relay.data_dir / ".tokens-test.json"
    replacement.write_text(json.dumps(data))
    os.replace(replacement, store_file)

    code, error = _ended_with_one_error(agent.process, DISCONNECT_WITHIN)
    assert code == AUTH_EXIT
    assert re.search(rf"token {token_id} expired at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC", error), error
    assert await _status(client, agent.public_url) == 502


# ------------------------------------------------------------------ expiry at connect, list


async def test_an_expired_token_is_refused_at_connect_with_its_expiry_time(
    processes: ProcessGroup, relay: Relay, origin: Origin
) -> None:
    token = create_token(relay.data_dir, "--expires", "1s", "--label", _unique("short-lived"))
    time.sleep(1.5)
    code, error, _ = run_refused_agent(processes, relay.port, str(origin.port), token)
    assert code == AUTH_EXIT
    assert re.search(r"token expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", error), error
    assert token not in relay.process.output()


def test_token_list_shows_scope_names_and_expiry_of_each_token(relay: Relay) -> None:
    dated, lasting, admin = _unique("dated"), _unique("lasting"), _unique("ops")
    first, second = _unique("one"), _unique("two")
    create_token(relay.data_dir, "--expires", "2099-01-31", "--label", dated)
    create_token(relay.data_dir, "--subdomain", first, "--subdomain", second, "--label", lasting)
    create_token(relay.data_dir, "--admin", "--label", admin)
    header = relay_cli("token", "list", "--data-dir", str(relay.data_dir)).stdout.splitlines()[0]
    assert re.split(r"\s{2,}", header.strip()) == ["ID", "SCOPE", "SUBDOMAINS", "CREATED", "EXPIRES", "LABEL"]
    assert _row(relay, dated)[1] == "agent"
    assert _row(relay, dated)[4] == "2099-01-31 00:00:00 UTC"
    assert _row(relay, lasting)[2] == f"{first},{second}"
    assert _row(relay, lasting)[4] == "never"
    assert _row(relay, admin)[1] == "admin"


@pytest.mark.parametrize(
    "options, message",
    [
        (("--expires", "tomorrow"), "not a duration"),
        (("--expires", "2001-01-01"), "in the past"),
        (("--expires", "0h"), "more than zero"),
        (("--admin", "--subdomain", "ops-board"), "admin"),
        (("--subdomain", "_relay"), "reserved"),
        (("--subdomain", "ok-name", "--subdomain", "www"), "reserved"),
        (("--subdomain", "ab--name"), "not a valid DNS label"),
    ],
)
def test_token_create_refuses_bad_options_with_one_line_and_creates_nothing(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    result = relay_cli("token", "create", *options, "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert TokenStore(tmp_path).is_empty()


# ------------------------------------------------------------------ admin scope


async def test_an_admin_token_cannot_open_a_tunnel(processes: ProcessGroup, relay: Relay, origin: Origin) -> None:
    token = create_token(relay.data_dir, "--admin", "--label", _unique("admin"))
    code, error, _ = run_refused_agent(processes, relay.port, str(origin.port), token)
    assert code == AUTH_EXIT
    assert "admin token" in error
    assert TokenStore(relay.data_dir).authenticate_admin(token) is not None


# ------------------------------------------------------------------ names a token may claim


async def test_a_token_with_several_names_gets_its_first_by_default_and_may_ask_for_another(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    first, second = _unique("first"), _unique("second")
    token = create_token(relay.data_dir, "--subdomain", first, "--subdomain", second)
    by_default = start_agent(processes, relay, str(origin.port), token)
    asked = start_agent(processes, relay, str(origin.port), token, subdomain=second)
    assert (by_default.name, asked.name) == (first, second)
    assert await _status(client, by_default.public_url) == 200
    assert await _status(client, asked.public_url) == 200


async def test_a_token_with_reserved_names_cannot_claim_any_other_name(
    processes: ProcessGroup, relay: Relay, origin: Origin
) -> None:
    mine, elsewhere = _unique("mine"), _unique("elsewhere")
    token = create_token(relay.data_dir, "--subdomain", mine)
    code, error, _ = run_refused_agent(processes, relay.port, str(origin.port), token, subdomain=elsewhere)
    assert code == NAME_EXIT
    assert mine in error and elsewhere in error


async def test_a_token_without_reservations_gets_an_unguessable_name_or_any_free_one(
    processes: ProcessGroup, relay: Relay, origin: Origin
) -> None:
    token = create_token(relay.data_dir, "--label", _unique("free"))
    assigned = start_agent(processes, relay, str(origin.port), token)
    assert re.fullmatch(r"[a-z2-9]{10}", assigned.name)
    chosen = _unique("chosen")
    assert start_agent(processes, relay, str(origin.port), token, subdomain=chosen).name == chosen


@pytest.mark.parametrize("name", ["www", "admin", "_relay", "_relay-connect", "wpad", "ab--cd", "xn--zz", "x-"])
async def test_reserved_and_malformed_names_are_refused_with_the_name_exit_code(
    processes: ProcessGroup, relay: Relay, origin: Origin, name: str
) -> None:
    token = create_token(relay.data_dir, "--label", _unique("namer"))
    code, error, _ = run_refused_agent(processes, relay.port, str(origin.port), token, subdomain=name)
    assert code == NAME_EXIT
    assert repr(name) in error
    assert "reserved" in error or "not a valid DNS label" in error


# ------------------------------------------------------------------ the sweep, in process


@dataclass
class _FakeMux:
    closed: bool = False
    close_code: ErrorCode | None = None
    close_reason: str = ""

    def close(self, code: ErrorCode = ErrorCode.GOING_AWAY, reason: str = "") -> None:
        self.closed, self.close_code, self.close_reason = True, code, reason


@dataclass
class _FakeTunnel:
    name: str
    owner: Owner
    mux: _FakeMux = field(default_factory=_FakeMux)


def test_the_sweep_closes_only_tunnels_of_revoked_expired_or_admin_tokens(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    _, good = store.create(label="good")
    _, dated = store.create(label="dated", expires=time.time() + 3600)
    _, revoked = store.create(label="revoked")
    tunnels = {
        "good": _FakeTunnel("good", Owner(good.id, "a")),
        "dated": _FakeTunnel("dated", Owner(dated.id, "b")),
        "revoked": _FakeTunnel("revoked", Owner(revoked.id, "c")),
        "open-relay": _FakeTunnel("open-relay", Owner(None, "d")),
    }
    clock = [time.time()]
    watcher = TokenWatcher(TokenStore(tmp_path), lambda: list(tunnels.values()), clock=lambda: clock[0])
    assert watcher.sweep() == 0

    TokenStore(tmp_path).revoke(revoked.id)  # another process rewrites the file
    assert watcher.sweep() == 1
    assert tunnels["revoked"].mux.close_code == ErrorCode.UNAUTHORIZED
    assert tunnels["revoked"].mux.close_reason == f"token {revoked.id} was revoked"

    clock[0] += 3601  # no file change: the clock alone expires the dated token
    assert watcher.sweep() == 1
    assert tunnels["dated"].mux.close_code == ErrorCode.UNAUTHORIZED
    assert tunnels["dated"].mux.close_reason.startswith(f"token {dated.id} expired at ")
    assert not tunnels["good"].mux.closed and not tunnels["open-relay"].mux.closed
    assert watcher.sweep() == 0  # closed tunnels are not closed twice


def test_the_sweep_keeps_every_tunnel_while_the_store_is_unreadable(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    _, record = store.create()
    tunnel = _FakeTunnel("kept", Owner(record.id, "a"))
    watcher = TokenWatcher(TokenStore(tmp_path), lambda: [tunnel])
    store.path.write_text("{ half-written")
    assert watcher.sweep() == 0
    assert not tunnel.mux.closed
    store.path.unlink()  # no store at all: nothing authenticates any more
    assert watcher.sweep() == 1
    assert tunnel.mux.close_reason == f"token {record.id} was revoked"
