"""Tunnel names: DNS-label rules, reserved words, random assignment (relay_server/names.py)."""

from __future__ import annotations

import pytest

from relay_server.names import (
    ASSIGNED_NAME_BITS,
    ASSIGNED_NAME_LENGTH,
    RESERVED_NAMES,
    InvalidName,
    random_name,
    validate_name,
)


@pytest.mark.parametrize(
    "name, normal",
    [
        ("myapp", "myapp"),
        ("MyApp", "myapp"),
        ("  spaced  ", "spaced"),
        ("a", "a"),
        ("0day", "0day"),
        ("my-app-2", "my-app-2"),
        ("a--b", "a--b"),
        ("x" * 63, "x" * 63),
        ("xn--caf-dma", "xn--caf-dma"),  # café
        ("XN--Bcher-KVA", "xn--bcher-kva"),  # bücher
        ("xn--80ak6aa92e", "xn--80ak6aa92e"),  # Cyrillic
        ("123", "123"),
        ("a-b-c-d", "a-b-c-d"),
    ],
)
def test_valid_names_are_normalised_to_lower_case(name, normal):
    assert validate_name(name) == normal


@pytest.mark.parametrize(
    "name",
    [
        "", " ", "-app", "app-", "-", "my_app", "my.app", "my app", "x" * 64, "caf\u00e9", "ap\np", "a/b",
        "xn--\u00e9", "a\x00b", "app:80", "*", "a*", "@", "%61", "\u0430pple",
        "ab--cd",  # hyphens in 3rd and 4th place: reserved for xn-- (R-LDH)
        "xn--",  # nothing after the prefix
        "xn--abc",  # not punycode of anything printable
        "xn--zz",  # truncated punycode
        "xn--abc-",  # trailing hyphen
    ],
)
def test_names_that_are_not_dns_labels_are_refused(name):
    with pytest.raises(InvalidName, match="not a valid DNS label"):
        validate_name(name)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES) + ["WWW", " Admin "])
def test_reserved_names_are_refused_in_any_case(name):
    with pytest.raises(InvalidName, match="reserved"):
        validate_name(name)


def test_reserved_names_include_the_relays_own_hosts():
    assert {"www", "api", "admin", "relay", "mail", "localhost", "wpad", "autoconfig"} <= RESERVED_NAMES


@pytest.mark.parametrize("name", ["_relay", "_relay-metrics", "_RELAY", "_acme-challenge", "_", "_x"])
def test_names_starting_with_an_underscore_are_reserved_for_the_relay(name):
    with pytest.raises(InvalidName, match="reserved"):
        validate_name(name)


def test_assigned_names_carry_at_least_40_bits_of_randomness():
    assert ASSIGNED_NAME_BITS >= 40
    letters = {c for _ in range(500) for c in random_name()}
    assert len(letters) ** ASSIGNED_NAME_LENGTH >= 2**40  # the alphabet really in use, not only the constant


def test_random_names_are_valid_unambiguous_and_fixed_length():
    for _ in range(200):
        name = random_name()
        assert len(name) == ASSIGNED_NAME_LENGTH == 10
        assert validate_name(name) == name
        assert name not in RESERVED_NAMES
        assert not set(name) & set("01lo-")


def test_random_names_do_not_repeat():
    assert len({random_name() for _ in range(2000)}) == 2000
