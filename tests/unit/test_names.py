"""Tunnel names: DNS-label rules, reserved words, random assignment (relay_server/names.py)."""

from __future__ import annotations

import pytest

from relay_server.names import ASSIGNED_NAME_LENGTH, RESERVED_NAMES, InvalidName, random_name, validate_name


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
    ],
)
def test_valid_names_are_normalised_to_lower_case(name, normal):
    assert validate_name(name) == normal


@pytest.mark.parametrize(
    "name",
    ["", " ", "-app", "app-", "my_app", "my.app", "my app", "x" * 64, "caf\u00e9", "ap\np", "a/b", "xn--\u00e9"],
)
def test_names_that_are_not_dns_labels_are_refused(name):
    with pytest.raises(InvalidName, match="not a valid DNS label"):
        validate_name(name)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES) + ["WWW", " Admin "])
def test_reserved_names_are_refused_in_any_case(name):
    with pytest.raises(InvalidName, match="reserved"):
        validate_name(name)


def test_reserved_names_include_the_relays_own_hosts():
    assert {"www", "api", "admin", "relay", "localhost"} <= RESERVED_NAMES


def test_random_names_are_valid_unambiguous_and_fixed_length():
    for _ in range(200):
        name = random_name()
        assert len(name) == ASSIGNED_NAME_LENGTH == 10
        assert validate_name(name) == name
        assert not set(name) & set("01lo")


def test_random_names_do_not_repeat():
    assert len({random_name() for _ in range(2000)}) == 2000
