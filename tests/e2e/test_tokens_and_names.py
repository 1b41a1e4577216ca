"""Who may open a tunnel, under which name: tokens, the first-start line, reserved and taken names."""

from __future__ import annotations

import re
import secrets
import shlex

import aiohttp

from support.localrelay import (
    PASTE_LINE,
    Origin,
    Relay,
    create_token,
    relay_cli,
    run_refused_agent,
    start_agent,
)
from support.processes import ProcessGroup


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def _answers(client: aiohttp.ClientSession, public_url: str, path: str) -> None:
    """The tunnel at ``public_url`` reaches the origin."""
    async with client.get(public_url + path) as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == path


async def test_first_start_prints_a_ready_to_paste_line_whose_token_works(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    assert relay.paste_line is not None
    assert re.fullmatch(PASTE_LINE, relay.paste_line)
    argv = shlex.split(relay.paste_line)
    assert argv[:3] == ["relay-client", "http", "3000"]
    assert argv[3:5] == ["--server", f"http://localhost:{relay.port}"]
    assert argv[5] == "--token"

    # Paste it, pointing at our origin instead of port 3000.
    agent = start_agent(processes, relay, str(origin.port), token=argv[6])
    assert agent.local_url == f"http://localhost:{origin.port}"
    await _answers(client, agent.public_url, "/pasted")


async def test_an_agent_with_a_bad_token_exits_with_an_error_about_the_token(
    processes: ProcessGroup, relay: Relay, origin: Origin
) -> None:
    code, error, elapsed = run_refused_agent(processes, relay.port, str(origin.port), "lr_not-a-real-token")
    assert code != 0
    assert elapsed < 5.0
    assert "token" in error.lower()


async def test_an_agent_without_a_token_is_refused_by_a_relay_that_requires_one(
    processes: ProcessGroup, relay: Relay, origin: Origin
) -> None:
    code, error, elapsed = run_refused_agent(processes, relay.port, str(origin.port), None)
    assert code != 0
    assert elapsed < 5.0
    assert "token" in error.lower()


async def test_a_subdomain_held_by_another_tokens_live_agent_cannot_be_taken(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    name = _unique("held")
    first = start_agent(processes, relay, str(origin.port), create_token(relay.data_dir, "--label", "holder"), subdomain=name)
    assert first.name == name

    code, error, elapsed = run_refused_agent(
        processes, relay.port, str(origin.port), create_token(relay.data_dir, "--label", "latecomer"), subdomain=name
    )
    assert code != 0
    assert elapsed < 5.0
    assert name in error
    assert first.process.returncode is None
    await _answers(client, first.public_url, "/still-mine")


async def test_a_token_that_reserves_a_subdomain_gets_it_by_default(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    name = _unique("reserved")
    token = create_token(relay.data_dir, "--subdomain", name, "--label", "reserving")
    agent = start_agent(processes, relay, str(origin.port), token)
    assert agent.name == name
    assert agent.public_url == f"http://{name}.localhost:{relay.port}"
    await _answers(client, agent.public_url, "/reserved")


async def test_another_token_cannot_claim_a_reserved_subdomain_even_while_it_is_unused(
    processes: ProcessGroup, relay: Relay, origin: Origin
) -> None:
    name = _unique("kept")
    create_token(relay.data_dir, "--subdomain", name, "--label", "owner")
    other = create_token(relay.data_dir, "--label", "other")
    code, error, elapsed = run_refused_agent(processes, relay.port, str(origin.port), other, subdomain=name)
    assert code != 0
    assert elapsed < 5.0
    assert name in error


def test_token_create_refuses_a_subdomain_another_token_reserves(relay: Relay) -> None:
    name = _unique("once")
    create_token(relay.data_dir, "--subdomain", name)
    result = relay_cli("token", "create", "--subdomain", name, "--data-dir", str(relay.data_dir))
    assert result.returncode != 0
    assert result.stdout == ""
    assert name in result.stderr


def test_token_list_shows_ids_and_labels_but_never_tokens(relay: Relay) -> None:
    label = _unique("listed")
    token = create_token(relay.data_dir, "--label", label)
    result = relay_cli("token", "list", "--data-dir", str(relay.data_dir))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if label in line]
    assert len(rows) == 1, result.stdout
    assert re.search(r"\btok_[0-9a-f]+\b", rows[0])
    assert token not in result.stdout + result.stderr
    assert "lr_" not in result.stdout + result.stderr
    assert relay.token not in result.stdout


async def test_a_revoked_token_cannot_open_new_tunnels(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    label = _unique("revoke-me")
    token = create_token(relay.data_dir, "--label", label)
    agent = start_agent(processes, relay, str(origin.port), token)
    await _answers(client, agent.public_url, "/before-revoke")
    agent.process.stop()

    listing = relay_cli("token", "list", "--data-dir", str(relay.data_dir)).stdout
    [row] = [line for line in listing.splitlines() if label in line]
    token_id = re.search(r"\btok_[0-9a-f]+\b", row).group(0)
    revoked = relay_cli("token", "revoke", token_id, "--data-dir", str(relay.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    assert token_id not in relay_cli("token", "list", "--data-dir", str(relay.data_dir)).stdout

    code, error, elapsed = run_refused_agent(processes, relay.port, str(origin.port), token)
    assert code != 0
    assert elapsed < 5.0
    assert "token" in error.lower()


def test_revoking_an_unknown_token_id_fails_with_a_clear_message(relay: Relay) -> None:
    result = relay_cli("token", "revoke", "tok_000000000000", "--data-dir", str(relay.data_dir))
    assert result.returncode != 0
    assert "tok_000000000000" in result.stderr
    assert "Traceback" not in result.stderr
