"""Tunnel names: DNS-label rules, reserved words, and random assignment."""

from __future__ import annotations

import re
import secrets

#: One DNS label, lower case (RFC 1035 with RFC 1123 digits first allowed).
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")

#: Names that would confuse users or collide with the relay's own hosts.
RESERVED_NAMES = frozenset({"www", "api", "admin", "relay", "mail", "status", "dashboard", "localhost"})

#: Letters of assigned names: no look-alikes (0/o, 1/l).
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"

#: Characters of an assigned name: 32**10 = 2**50 possibilities, not guessable by scanning.
ASSIGNED_NAME_LENGTH = 10


class InvalidName(ValueError):
    """A requested subdomain breaks the naming rules; the message says how."""


def validate_name(name: str) -> str:
    """Return the normalised (lower-case) name or raise InvalidName."""
    normal = name.strip().lower()
    if not _LABEL.match(normal):
        raise InvalidName(
            f"subdomain {name!r} is not a valid DNS label "
            "(1-63 letters, digits or '-', not starting or ending with '-')"
        )
    if normal in RESERVED_NAMES:
        raise InvalidName(f"subdomain {name!r} is reserved")
    return normal


def random_name() -> str:
    """A fresh unguessable name."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(ASSIGNED_NAME_LENGTH))
