"""Tokens: shown once, stored hashed, file 0600, reloaded on change; scopes, expiry, several names (relay_server/tokens.py)."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime, timezone

import pytest

from relay_server.tokens import (
    STORE_FILE,
    TOKEN_PREFIX,
    TokenStore,
    TokenStoreError,
    bearer_token,
    format_time,
    hash_token,
    parse_expiry,
)


@pytest.fixture
def store(tmp_path):
    return TokenStore(tmp_path / "data")


def test_create_returns_the_token_once_and_stores_only_its_hash(store):
    token, record = store.create(label="laptop")
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    text = store.path.read_text()
    assert token not in text and token[len(TOKEN_PREFIX) :] not in text
    stored = json.loads(text)
    assert stored["version"] == 1
    assert stored["tokens"] == [
        {
            "id": record.id,
            "hash": hash_token(token),
            "label": "laptop",
            "subdomain": None,
            "created": record.created,
            "subdomains": [],
            "expires": None,
            "scope": "agent",
        }
    ]
    assert record.hash == hash_token(token) and len(record.hash) == 64
    assert record.id.startswith("tok_")


def test_every_token_is_different(store):
    tokens = {store.create()[0] for _ in range(20)}
    assert len(tokens) == 20
    assert len({r.id for r in store.records()}) == 20


def test_store_file_is_private(store):
    store.create()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert not [p for p in store.path.parent.iterdir() if p.name != STORE_FILE]  # no temp files left


def test_authenticate_finds_the_record_for_the_right_token_only(store):
    token, record = store.create(label="a")
    other, _ = store.create(label="b")
    assert store.authenticate(token) == record
    assert store.authenticate(other).label == "b"
    assert store.authenticate(token + "x") is None
    assert store.authenticate("") is None
    assert store.authenticate(record.hash) is None  # the stored hash is not a token
    assert store.authenticate("\udcff") is None  # lone surrogates hash without crashing


def test_revoke_removes_the_token_and_reports_whether_it_existed(store):
    token, record = store.create()
    assert store.revoke(record.id) is True
    assert store.authenticate(token) is None
    assert store.revoke(record.id) is False
    assert store.is_empty()


def test_subdomain_reservation_is_exclusive(store):
    _, record = store.create(subdomain="myapp")
    assert store.reserved_by("myapp") == record
    assert store.reserved_by("other") is None
    with pytest.raises(TokenStoreError, match="already reserved"):
        store.create(subdomain="myapp")
    store.revoke(record.id)
    _, again = store.create(subdomain="myapp")
    assert store.reserved_by("myapp") == again


def test_missing_store_is_empty_not_an_error(store):
    assert store.is_empty()
    assert store.authenticate("lr_anything") is None


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        "null",
        '{"version": 1}',
        '{"tokens": "abc"}',
        '{"tokens": [{"id": "x"}]}',
        '{"tokens": [{"id": "x", "hash": "h", "colour": "red"}]}',
        '{"tokens": [1]}',
        '{"tokens": [{"id": "x", "hash": "h", "scope": "root"}]}',
        '{"tokens": [{"id": "x", "hash": "h", "subdomains": "abc"}]}',
        '{"tokens": [{"id": "x", "hash": "h", "expires": "tomorrow"}]}',
        '{"tokens": [{"id": "x", "hash": "h"}, {"id": "x", "hash": "i"}]}',
    ],
)
def test_corrupt_store_raises_token_store_error_naming_the_file(store, content):
    store.path.parent.mkdir(parents=True)
    store.path.write_text(content)
    with pytest.raises(TokenStoreError) as info:
        store.authenticate("lr_x")
    assert str(store.path) in str(info.value)


def test_unreadable_store_raises_token_store_error(tmp_path):
    if os.geteuid() == 0:
        # root reads anything; a directory where the file should be fails for everyone
        (tmp_path / STORE_FILE).mkdir()
    else:
        (tmp_path / STORE_FILE).write_text("{}")
        os.chmod(tmp_path / STORE_FILE, 0)
    with pytest.raises(TokenStoreError, match="cannot read"):
        TokenStore(tmp_path).records()


def test_changes_by_another_process_are_picked_up(tmp_path):
    relay = TokenStore(tmp_path)
    cli = TokenStore(tmp_path)
    assert relay.is_empty()
    token, record = cli.create(label="new")
    assert relay.authenticate(token) == record
    cli.revoke(record.id)
    assert relay.authenticate(token) is None


def test_a_replaced_store_is_reloaded_even_with_the_same_size_and_mtime(tmp_path):
    # Filesystems with coarse timestamps (1-2 s on some) can give two quick writes
    # the same mtime; a same-size rewrite (revoke one token, create another) must
    # still be noticed, or a revoked token keeps working on the running relay.
    relay = TokenStore(tmp_path)
    cli = TokenStore(tmp_path)
    old_token, old = cli.create(label="x")
    assert relay.authenticate(old_token) == old
    before = os.stat(relay.path)
    records = json.loads(relay.path.read_text())
    new_token = old_token[:-1] + ("A" if old_token[-1] != "A" else "B")
    records["tokens"][0]["hash"] = hash_token(new_token)
    tmp = tmp_path / "replacement.json"
    tmp.write_text(json.dumps(records, indent=2))
    assert tmp.stat().st_size == before.st_size
    os.replace(tmp, relay.path)  # a new file (new inode), as every save makes
    os.utime(relay.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert relay.authenticate(old_token) is None


def test_store_directory_is_created_private(tmp_path):
    store = TokenStore(tmp_path / "new" / "dir")
    store.create()
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "dir").st_mode) & 0o077 == 0


# ------------------------------------------------------------------ expiry


NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.mark.parametrize(
    "text, seconds",
    [("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("90s", 90), (" 12H ", 43200), ("1 d", 86400)],
)
def test_expiry_durations_count_from_now(text, seconds):
    assert parse_expiry(text, now=NOW) == NOW + seconds


@pytest.mark.parametrize(
    "text, moment",
    [
        ("2027-02-01", datetime(2027, 2, 1, tzinfo=timezone.utc)),
        ("2027-02-01T18:30", datetime(2027, 2, 1, 18, 30, tzinfo=timezone.utc)),
        ("2027-02-01T18:30:00Z", datetime(2027, 2, 1, 18, 30, tzinfo=timezone.utc)),
        ("2027-02-01 18:30+02:00", datetime(2027, 2, 1, 16, 30, tzinfo=timezone.utc)),
    ],
)
def test_expiry_dates_are_utc_unless_they_name_an_offset(text, moment):
    assert parse_expiry(text, now=NOW) == moment.timestamp()


@pytest.mark.parametrize(
    "text, message",
    [
        ("0m", "more than zero"),
        ("2020-01-01", "in the past"),
        ("2027-01-15T07:59", "in the past"),
        ("banana", "not a duration"),
        ("-5m", "not a duration"),
        ("5y", "not a duration"),
        ("", "not a duration"),
        ("2027-13-01", "not a duration"),
    ],
)
def test_bad_expiries_are_refused_with_a_sentence(text, message):
    with pytest.raises(ValueError, match=message):
        parse_expiry(text, now=NOW)


def test_an_expired_token_no_longer_authenticates_but_is_still_found(store):
    token, record = store.create(expires=time.time() - 1)
    assert record.expired()
    assert store.authenticate(token) is None
    assert store.find(token) == record
    assert "UTC" in record.expires_text()
    live, live_record = store.create(expires=time.time() + 3600)
    assert store.authenticate(live) == live_record
    assert not live_record.expired()


def test_expiry_is_stored_and_read_back(tmp_path):
    stamp = time.time() + 3600
    _, record = TokenStore(tmp_path).create(expires=stamp)
    assert TokenStore(tmp_path).get(record.id).expires == stamp
    assert record.expires_text() == format_time(stamp)


def test_a_store_written_before_expiry_scopes_and_several_names_still_loads(store):
    store.path.parent.mkdir(parents=True)
    token = TOKEN_PREFIX + "old"
    old = {"id": "tok_0123456789ab", "hash": hash_token(token), "label": "old", "subdomain": "legacy", "created": 1.0}
    store.path.write_text(json.dumps({"version": 1, "tokens": [old]}))
    record = store.authenticate(token)
    assert record is not None
    assert (record.scope, record.expires, record.names) == ("agent", None, ["legacy"])
    assert store.reserved_by("legacy") == record
    store.create(label="new")  # rewriting keeps the old record whole
    again = json.loads(store.path.read_text())["tokens"][0]
    assert again["subdomain"] == "legacy" and again["subdomains"] == ["legacy"]


# ------------------------------------------------------------------ scopes


def test_an_admin_token_authenticates_only_as_admin(store):
    admin, admin_record = store.create(label="ops", admin=True)
    agent, agent_record = store.create(label="laptop")
    assert admin_record.scope == "admin" and admin_record.is_admin
    assert store.authenticate_admin(admin) == admin_record
    assert store.authenticate(admin) is None
    assert store.authenticate_admin(agent) is None
    assert store.authenticate(agent) == agent_record
    assert store.authenticate_admin("lr_unknown") is None
    assert store.authenticate_admin("") is None


def test_an_expired_or_revoked_admin_token_is_refused(store):
    expired, _ = store.create(admin=True, expires=time.time() - 1)
    assert store.authenticate_admin(expired) is None
    revoked, record = store.create(admin=True)
    store.revoke(record.id)
    assert store.authenticate_admin(revoked) is None


def test_an_admin_token_cannot_reserve_names(store):
    with pytest.raises(TokenStoreError, match="admin"):
        store.create(admin=True, subdomains=["ops"])
    assert store.is_empty()


def test_a_token_may_reserve_several_names_each_exclusively(store):
    _, record = store.create(subdomains=["one", "two", "one"])
    assert record.names == ["one", "two"]
    assert record.subdomain == "one"
    assert store.reserved_by("two") == record
    with pytest.raises(TokenStoreError, match="'two' is already reserved"):
        store.create(subdomains=["three", "two"])
    assert store.reserved_by("three") is None  # a refused create reserves nothing


def test_get_follows_revocation_by_another_process(tmp_path):
    relay, cli = TokenStore(tmp_path), TokenStore(tmp_path)
    _, record = cli.create()
    assert relay.get(record.id) == record
    before = relay.stamp()
    cli.revoke(record.id)
    assert relay.get(record.id) is None
    assert relay.stamp() != before


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer lr_abc", "lr_abc"),
        ("bearer   lr_abc  ", "lr_abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("", None),
    ],
)
def test_bearer_token_takes_only_a_bearer_scheme_with_a_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token
