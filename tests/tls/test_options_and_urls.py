"""TLS options -> config fields, and the public URLs that follow from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay_server.config import RelayConfig
from relay_server.tls.options import SELF_SIGNED_PORT, TLSOptionError, TLSOptions


def test_public_urls_use_https_and_the_tls_port_when_the_tls_listener_is_on() -> None:
    config = RelayConfig(domain="example.com", http_port=8080, https_port=8443)

    assert config.public_url("demo") == "https://demo.example.com:8443"
    assert config.public_url() == "https://example.com:8443"


def test_port_443_is_left_out_of_public_urls() -> None:
    assert RelayConfig(domain="example.com", http_port=80, https_port=443).public_url("demo") == "https://demo.example.com"


def test_without_tls_public_urls_stay_http() -> None:
    assert RelayConfig(domain="example.com", http_port=80).public_url("demo") == "http://demo.example.com"


def test_behind_a_tls_proxy_the_public_scheme_is_https_on_443_unless_told_otherwise() -> None:
    proxied = RelayConfig(domain="example.com", http_port=8080, public_scheme="https")
    assert proxied.public_url("demo") == "https://demo.example.com"
    mapped = RelayConfig(domain="example.com", http_port=8080, public_scheme="https", public_port=8443)
    assert mapped.public_url("demo") == "https://demo.example.com:8443"


def test_a_container_mapping_443_to_8443_shows_443() -> None:
    config = RelayConfig(domain="example.com", http_port=8080, https_port=8443, public_port=443)

    assert config.public_url("demo") == "https://demo.example.com"


def test_self_signed_listens_on_8443_unless_a_port_is_given() -> None:
    assert TLSOptions(8080, self_signed=True, acme_directory="https://x/dir").config_fields()["https_port"] == SELF_SIGNED_PORT
    assert TLSOptions(8080, 9443, self_signed=True, acme_directory="https://x/dir").config_fields()["https_port"] == 9443


def test_certificates_pair_with_keys_by_position_and_a_missing_key_means_the_key_is_in_the_file() -> None:
    fields = TLSOptions(
        8080, 8443, tls_cert=[Path("a.pem"), Path("b.pem")], tls_key=[Path("a.key")], acme_directory="https://x/dir"
    ).config_fields()

    assert fields["tls_files"] == [(Path("a.pem"), Path("a.key")), (Path("b.pem"), None)]


@pytest.mark.parametrize(
    "options",
    [
        {"https_port": 8080},
        {"tls_key": [Path("k.pem")], "tls_cert": [], "https_port": 8443, "self_signed": True},
        {"https_port": 8443, "acme_email": "a@example.com", "acme_challenge": "http-01", "http_port": 0},
        {"https_port": 8443, "self_signed": True, "public_scheme": "gopher"},
        {"https_port": 8443, "self_signed": True, "acme_ca": Path("ca.pem")},
    ],
    ids=["same-port-twice", "key-without-cert", "http-01-without-http", "bad-scheme", "acme-ca-without-acme"],
)
def test_contradicting_options_are_refused(options: dict) -> None:
    values = {"http_port": 8080, "acme_directory": "https://x/dir", **options}
    with pytest.raises(TLSOptionError):
        TLSOptions(**values).config_fields()
