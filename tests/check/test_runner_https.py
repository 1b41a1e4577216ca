"""``run_check`` called directly, against the sample plugin app served over TLS by a private CA (``--cacert``)."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.ports import free_port

from check.helpers import PLUGIN_SERVER
from relay_client.check import Options, Status, run_check


def _load_plugin_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("sample_plugin_server", PLUGIN_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_ca_and_leaf(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a leaf for localhost / 127.0.0.1 signed by it: (ca.pem, leaf.pem, leaf.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "check test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, leaf_path, key_path = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, leaf_path, key_path


@pytest.fixture
async def https_plugin(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The sample plugin app on https://localhost:PORT with a private CA; (base URL, CA file)."""
    ca_path, leaf_path, key_path = _write_ca_and_leaf(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf_path, key_path)
    port = free_port()
    base = f"https://localhost:{port}"
    runner = web.AppRunner(_load_plugin_module().make_app(base), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield base, ca_path
    finally:
        await runner.cleanup()


async def test_a_private_ca_is_trusted_with_cacert(https_plugin: tuple[str, Path]) -> None:
    base, ca_path = https_plugin
    report = await run_check(Options(url=base, cacert=str(ca_path), timeout=5))
    statuses = {check.name: check.status for check in report.checks}
    assert statuses["manifest"] is Status.PASS, report.as_dict()
    assert statuses["logo"] is Status.PASS
    assert statuses["CORS preflight"] is Status.PASS
    # Checked on this machine: the only warning says so; nothing fails.
    assert [check.name for check in report.checks if check.status is not Status.PASS] == ["public URL"]
    assert report.exit_code == 0


async def test_without_cacert_the_untrusted_certificate_is_named_with_the_fix(https_plugin: tuple[str, Path]) -> None:
    base, _ = https_plugin
    report = await run_check(Options(url=base, timeout=5))
    [failure] = [check for check in report.checks if check.status is Status.FAIL]
    assert failure.name == "manifest"
    assert failure.message.startswith(f"GET {base}/.well-known/ai-plugin.json: the server's certificate is not trusted (")
    assert "--cacert FILE" in failure.fix
    assert report.exit_code == 1


async def test_an_unreadable_cacert_is_reported_not_raised(tmp_path: Path) -> None:
    report = await run_check(Options(url="https://localhost:1", cacert=str(tmp_path / "missing.pem"), timeout=5))
    [check] = report.checks
    assert (check.name, check.status) == ("setup", Status.FAIL)
    assert check.message.startswith(f"--cacert {tmp_path / 'missing.pem'}: ")
