"""Tokens: created once, shown once, stored only as SHA-256 hashes.

Tokens are 256-bit random strings, so a fast hash is enough (no password
stretching needed) and a stolen store reveals nothing usable.  Lookups
compare against every stored hash with ``hmac.compare_digest`` so timing
does not tell how close a guess was.  The store is a JSON file written
atomically with mode 0600; the relay re-reads it when it changes, so
``token create`` and ``token revoke`` take effect on a running relay.

A token has a scope: ``agent`` tokens open tunnels (optionally only under
the names they reserve), ``admin`` tokens open the relay's admin endpoints
(metrics) and nothing else.  Either may carry an expiry time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

#: Prefix that makes a leaked token recognisable to secret scanners.
TOKEN_PREFIX = "lr_"

STORE_FILE = "tokens.json"

#: Scope of a token that opens tunnels.
AGENT_SCOPE = "agent"

#: Scope of a token for the relay's admin endpoints (metrics); it opens no tunnel.
ADMIN_SCOPE = "admin"

SCOPES = (AGENT_SCOPE, ADMIN_SCOPE)


class TokenStoreError(Exception):
    """The store cannot be read or written; the message says which file and why."""


@dataclass(slots=True)
class TokenRecord:
    """One token as stored: never the token itself."""

    id: str
    hash: str
    label: str = ""
    #: The first reserved name (kept so stores and readers from before ``subdomains`` still work).
    subdomain: str | None = None
    created: float = 0.0
    #: Every name the token reserves; a token with any may open tunnels under these only.
    subdomains: list[str] = field(default_factory=list)
    #: Unix time after which the token no longer authenticates (None: never expires).
    expires: float | None = None
    scope: str = AGENT_SCOPE

    def __post_init__(self) -> None:
        if self.subdomain and not self.subdomains:  # a record written before ``subdomains`` existed
            self.subdomains = [self.subdomain]
        if not isinstance(self.subdomains, list) or not all(isinstance(n, str) for n in self.subdomains):
            raise TypeError("subdomains must be a list of names")
        if self.expires is not None and not isinstance(self.expires, (int, float)):
            raise TypeError("expires must be a number or null")
        if self.scope not in SCOPES:
            raise TypeError(f"scope must be one of {', '.join(SCOPES)}")

    @property
    def names(self) -> list[str]:
        """The names this token reserves (empty: it may claim any free name)."""
        return list(self.subdomains)

    @property
    def is_admin(self) -> bool:
        """An admin token: metrics and other admin endpoints, never tunnels."""
        return self.scope == ADMIN_SCOPE

    def expired(self, now: float | None = None) -> bool:
        """Whether the token is past its expiry time."""
        return self.expires is not None and (time.time() if now is None else now) >= self.expires

    def expires_text(self) -> str:
        """The expiry time as ``YYYY-MM-DD HH:MM:SS UTC``, or ``never``."""
        return "never" if self.expires is None else format_time(self.expires)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for any other value."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def format_time(stamp: float) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS UTC`` (what users see in messages and lists)."""
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


#: ``30m``, ``12h``, ``7d``, ``2w``, ``90s``.
_DURATION = re.compile(r"(\d+)\s*([smhdw])\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float | None = None) -> float:
    """``--expires``: a duration from now (``30m``, ``12h``, ``7d``) or an ISO date/datetime.

    A date alone means 00:00 UTC of that day; a datetime without an offset is UTC.
    Raises ValueError with the sentence to show.
    """
    now = time.time() if now is None else now
    value = text.strip().lower()
    match = _DURATION.match(value)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds <= 0:
            raise ValueError(f"--expires {text!r}: the duration must be more than zero")
        return now + seconds
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
        else:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--expires {text!r} is not a duration (30m, 12h, 7d, 2w) or an ISO date/datetime (2027-01-31, 2027-01-31T18:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = moment.timestamp()
    if stamp <= now:
        raise ValueError(f"--expires {text!r} is in the past ({format_time(stamp)})")
    return stamp


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

    def find(self, token: str) -> TokenRecord | None:
        """The record whose token this is, whatever its scope or expiry; compared in constant time."""
        self._reload_if_changed()
        digest = hash_token(token).encode()
        found: TokenRecord | None = None
        for record in self._records:  # no early exit: the time taken does not depend on the match
            if hmac.compare_digest(digest, record.hash.encode()):
                found = record
        return found

    def authenticate(self, token: str) -> TokenRecord | None:
        """The agent token's record if it is valid now (known, not expired, agent scope); else None."""
        record = self.find(token)
        if record is None or record.is_admin or record.expired():
            return None
        return record

    def authenticate_admin(self, token: str) -> TokenRecord | None:
        """The admin token's record if it is valid now (known, not expired, admin scope); else None."""
        record = self.find(token)
        if record is None or not record.is_admin or record.expired():
            return None
        return record

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with this id (reloaded if the file changed), if it still exists."""
        for record in self.records():
            if record.id == token_id:
                return record
        return None

    def reserved_by(self, subdomain: str) -> TokenRecord | None:
        """The token that reserves this name, if any (expired tokens keep their names until revoked)."""
        for record in self.records():
            if subdomain in record.subdomains:
                return record
        return None

    # ---------------------------------------------------------------- changes
    def create(
        self,
        label: str = "",
        subdomain: str | None = None,
        *,
        subdomains: Iterable[str] = (),
        expires: float | None = None,
        admin: bool = False,
    ) -> tuple[str, TokenRecord]:
        """Make a token; returns it (the only time it is seen) and its record.

        ``subdomain``/``subdomains``: names (already validated) the token reserves.
        """
        self._reload_if_changed()
        names = list(dict.fromkeys([*([subdomain] if subdomain else []), *subdomains]))
        if admin and names:
            raise TokenStoreError("an admin token opens no tunnels, so it cannot reserve subdomains")
        for name in names:
            if any(name in r.subdomains for r in self._records):
                raise TokenStoreError(f"subdomain {name!r} is already reserved by another token")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            id="tok_" + secrets.token_hex(6),
            hash=hash_token(token),
            label=label,
            subdomain=names[0] if names else None,
            created=time.time(),
            subdomains=names,
            expires=expires,
            scope=ADMIN_SCOPE if admin else AGENT_SCOPE,
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
    def stamp(self) -> tuple[int, ...] | None:
        """What identifies the loaded version of the file (after reloading it if it changed)."""
        self._reload_if_changed()
        return self._stamp

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
            if len({r.id for r in records}) != len(records):
                raise ValueError("two tokens share an id")
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
