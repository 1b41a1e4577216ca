"""``--self-signed``: a local CA in the data dir that issues a certificate per hostname for development.

OpenSSL (so curl and Python) does not accept a ``*.localhost`` wildcard (a
wildcard needs two labels after it), so the CA issues one certificate per
name instead, on the first handshake, in a few milliseconds.  The CA is
name-constrained to the relay's domain, ``localhost`` and loopback addresses,
so trusting it cannot vouch for any other site.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import logging
import shutil
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay_server.tls.keys import cert_pem, key_pem, load_key_pem, new_key
from relay_server.tls.storage import PUBLIC_FILE, CertDirectory, CertPaths, StorageError, local_ca_dir, read_file, write_file

log = logging.getLogger("relay_server.tls")

#: Lifetime of the local CA certificate.
CA_DAYS = 10 * 365

#: Lifetime of certificates it issues (renewed with a third left, like the others).
LEAF_DAYS = 365

#: Loopback addresses put in the ``localhost`` certificate (for https://127.0.0.1:PORT).
LOOPBACK_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return "relay"


def _permitted_dns(cert: x509.Certificate) -> set[str]:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in constraints.permitted_subtrees or [] if isinstance(n, x509.DNSName)}


class LocalCA:
    """The development CA: created on first use, then reused from ``<data-dir>/tls/local-ca``."""

    description = "the local development CA"

    def __init__(self, data_dir: Path, domain: str) -> None:
        folder = local_ca_dir(data_dir)
        self.ca_path = folder / "ca.pem"
        self.key_path = folder / "ca-key.pem"
        self.certs = CertDirectory(folder / "certs")
        self.domain = domain
        self._cert, self._key = self._load_or_create()

    def _load_or_create(self) -> tuple[x509.Certificate, object]:
        cert_data, key_data = read_file(self.ca_path), read_file(self.key_path)
        if cert_data and key_data:
            try:
                cert = x509.load_pem_x509_certificate(cert_data)
                key = load_key_pem(key_data)
            except ValueError as exc:
                raise StorageError(f"local CA in {self.ca_path.parent} is unreadable ({exc}); delete that folder") from None
            if {self.domain, "localhost"} <= _permitted_dns(cert):
                return cert, key
            log.warning("local CA %s does not cover %s; making a new one", self.ca_path, self.domain)
        return self._create()

    def _create(self) -> tuple[x509.Certificate, object]:
        key = new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "localrelay development CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"localrelay CA {_user()}@{socket.gethostname()}"[:64]),
        ])
        permitted: list[x509.GeneralName] = [x509.DNSName(self.domain)]
        if self.domain != "localhost":
            permitted.append(x509.DNSName("localhost"))
        permitted += [
            x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
            x509.IPAddress(ipaddress.ip_network("::1/128")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        shutil.rmtree(self.certs.root, ignore_errors=True)  # issued by a CA that is gone
        write_file(self.key_path, key_pem(key))
        write_file(self.ca_path, cert_pem(cert), PUBLIC_FILE)
        log.info("created a local CA at %s", self.ca_path)
        return cert, key

    def issue_now(self, hostname: str) -> CertPaths:
        """Issue and store a certificate for ``hostname`` (with loopback IPs for ``localhost``)."""
        key = new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        names: list[x509.GeneralName] = [x509.DNSName(hostname)]
        if hostname == "localhost":
            names += [x509.IPAddress(ip) for ip in LOOPBACK_IPS]
        ca_key = self._key
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[attr-defined]
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return self.certs.save(hostname, cert_pem(cert), key_pem(key))

    async def issue(self, hostname: str) -> CertPaths:
        """See ``Issuer.issue``: signing takes milliseconds, so it runs inline."""
        return self.issue_now(hostname)

    async def close(self) -> None:
        """Nothing to release."""
