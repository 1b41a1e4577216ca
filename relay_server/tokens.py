"""Agent tokens: created once, shown once, stored only as SHA-256 hashes.

Tokens are 256-bit random strings, so a fast hash is enough (no password
stretching needed) and a stolen store reveals nothing usable.  Lookups
compare against every stored hash with ``hmac.compare_digest`` so timing
does not tell how close a guess was.  The store is a JSON file written
atomically with mode 0600; the relay re-reads it when it changes, so
``token create`` and ``token revoke`` take effect on a running relay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: Prefix that makes a leaked token recognisable to secret scanners.
TOKEN_PREFIX = "lr_"

STORE_FILE = "tokens.json"


class TokenStoreError(Exception):
    """The store cannot be read or written; the message says which file and why."""


@dataclass(slots=True)
class TokenRecord:
    """One token as stored: never the token itself."""

    id: str
    hash: str
    label: str = ""
    subdomain: str | None = None
    created: float = 0.0


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class TokenStore:
    """Tokens in ``<data_dir>/tokens.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / STORE_FILE
        self._records: list[TokenRecord] = []
        self._stamp: tuple[int, ...] | None = None

    # ---------------------------------------------------------------- queries
    def records(self) -> list[TokenRecord]:
        """Every stored token record (reloaded if the file changed)."""
        self._reload_if_changed()
        return list(self._records)

    def is_empty(self) -> bool:
        """No token has been created yet."""
        return not self.records()

    def authenticate(self, token: str) -> TokenRecord | None:
        """The record whose token this is, compared in constant time; None if none."""
        self._reload_if_changed()
        digest = hash_token(token).encode()
        found: TokenRecord | None = None
        for record in self._records:
            if hmac.compare_digest(digest, record.hash.encode()):
                found = record
        return found

    def reserved_by(self, subdomain: str) -> TokenRecord | None:
        """The token that reserves this name, if any."""
        for record in self.records():
            if record.subdomain == subdomain:
                return record
        return None

    # ---------------------------------------------------------------- changes
    def create(self, label: str = "", subdomain: str | None = None) -> tuple[str, TokenRecord]:
        """Make a token; returns it (the only time it is seen) and its record."""
        self._reload_if_changed()
        if subdomain is not None and any(r.subdomain == subdomain for r in self._records):
            raise TokenStoreError(f"subdomain {subdomain!r} is already reserved by another token")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            id="tok_" + secrets.token_hex(6),
            hash=hash_token(token),
            label=label,
            subdomain=subdomain,
            created=time.time(),
        )
        self._records.append(record)
        self._save()
        return token, record

    def revoke(self, token_id: str) -> bool:
        """Delete a token by id; False if there was none."""
        self._reload_if_changed()
        kept = [r for r in self._records if r.id != token_id]
        if len(kept) == len(self._records):
            return False
        self._records = kept
        self._save()
        return True

    # ---------------------------------------------------------------- file I/O
    def _reload_if_changed(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = [], None
            return
        except OSError as exc:
            raise TokenStoreError(f"cannot read token store {self.path}: {exc.strerror}") from None
        stamp = _stamp(st)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            records = [TokenRecord(**item) for item in raw["tokens"]]
        except OSError as exc:
            raise TokenStoreError(f"cannot read token store {self.path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenStoreError(f"token store {self.path} is corrupt: {exc}") from None
        self._records, self._stamp = records, stamp

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": 1, "tokens": [asdict(r) for r in self._records]}, fh, indent=2)
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise TokenStoreError(f"cannot write token store {self.path}: {exc.strerror}") from None
        self._stamp = _stamp(self.path.stat())


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is replaced: the atomic rename gives a new inode even
    when a coarse clock leaves mtime and size equal."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
