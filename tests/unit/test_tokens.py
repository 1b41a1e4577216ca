"""Agent tokens: shown once, stored hashed, file 0600, reloaded on change (relay_server/tokens.py)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from relay_server.tokens import STORE_FILE, TOKEN_PREFIX, TokenStore, TokenStoreError, hash_token


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
        {"id": record.id, "hash": hash_token(token), "label": "laptop", "subdomain": None, "created": record.created}
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
