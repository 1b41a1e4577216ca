"""Tunnel names: DNS-label rules, reserved words, and random assignment.

A name becomes the first label of ``NAME.<domain>`` and, with automatic
certificates, of an ACME order, so it follows the rules a CA applies to a
hostname label: LDH only, no hyphen at either end, no ``??--`` label except a
genuine punycode ``xn--`` one (RFC 5890 "R-LDH" labels are reserved).
"""

from __future__ import annotations

import math
import re
import secrets

#: One DNS label, lower case (RFC 1035 with RFC 1123 digits first allowed).
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")

#: Names that would confuse users, collide with the relay's own hosts, or are
#: looked up automatically by clients (WPAD, mail autoconfiguration).
RESERVED_NAMES = frozenset(
    {
        "www", "api", "admin", "relay", "mail", "status", "dashboard", "localhost",
        "smtp", "imap", "pop", "pop3", "ftp", "mx", "ns", "ns1", "ns2",
        "autoconfig", "autodiscover", "wpad", "isatap",
        "metrics", "health", "login", "auth", "console",
    }
)

#: Prefix of every name the relay keeps for itself (``_relay``, ``_acme-challenge`` ...);
#: such names are not DNS host labels either, but they get their own clear message.
RESERVED_PREFIX = "_"

#: Letters of assigned names: no look-alikes (0/o, 1/l).
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"

#: Characters of an assigned name: 32**10 = 2**50 possibilities, not guessable by scanning.
ASSIGNED_NAME_LENGTH = 10

#: Bits of randomness in an assigned name (at least 40 by design).
ASSIGNED_NAME_BITS = ASSIGNED_NAME_LENGTH * math.log2(len(_ALPHABET))


class InvalidName(ValueError):
    """A requested subdomain breaks the naming rules; the message says how."""


def validate_name(name: str) -> str:
    """Return the normalised (lower-case) name or raise InvalidName."""
    normal = name.strip().lower()
    if normal.startswith(RESERVED_PREFIX):
        raise InvalidName(f"subdomain {name!r} is reserved (names starting with '_' belong to the relay)")
    if not _LABEL.match(normal):
        raise InvalidName(
            f"subdomain {name!r} is not a valid DNS label "
            "(1-63 letters, digits or '-', not starting or ending with '-')"
        )
    if normal[2:4] == "--":
        _check_a_label(name, normal)
    if normal in RESERVED_NAMES:
        raise InvalidName(f"subdomain {name!r} is reserved")
    return normal


def _check_a_label(name: str, normal: str) -> None:
    """``xn--`` must be real punycode of a non-ASCII label; other ``??--`` labels are reserved."""
    if not normal.startswith("xn--"):
        raise InvalidName(
            f"subdomain {name!r} is not a valid DNS label "
            "(hyphens in the 3rd and 4th place are reserved for punycode 'xn--' names)"
        )
    try:  # the stdlib's IDNA codec: punycode plus nameprep (no controls, no unassigned characters)
        decoded = normal.encode("ascii").decode("idna")
        canonical = decoded.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        decoded = canonical = ""
    if not decoded or decoded.isascii() or canonical != normal:
        raise InvalidName(f"subdomain {name!r} is not a valid DNS label (not a valid punycode 'xn--' name)")


def random_name() -> str:
    """A fresh unguessable name."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(ASSIGNED_NAME_LENGTH))
