"""One ACME order from start to stored certificate, and the account it runs under."""

from __future__ import annotations

import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from relay_server.tls.acme.challenges import HTTP01, TLS_ALPN01, Challenges
from relay_server.tls.acme.client import AcmeClient, AcmeError
from relay_server.tls.acme.jws import AccountKey, b64url
from relay_server.tls.keys import csr_der, key_pem, load_key_pem, new_key
from relay_server.tls.storage import (
    CertDirectory,
    CertPaths,
    StorageError,
    acme_server_dir,
    ensure_private_dir,
    read_file,
    write_file,
)

log = logging.getLogger("relay_server.tls.acme")

#: Seconds one order may take from creation to downloaded certificate.
ORDER_TIMEOUT = 180.0


def client_ssl_context(extra_ca: Path | None) -> ssl.SSLContext:
    """Outgoing TLS: the system store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), plus ``--acme-ca``."""
    context = ssl.create_default_context()
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


def _challenge_error(authz: dict[str, Any], kind: str) -> str:
    for challenge in authz.get("challenges") or []:
        error = challenge.get("error")
        if isinstance(error, dict):
            detail = error.get("detail") or error.get("type") or "failed"
            return f"{challenge.get('type', kind)} validation failed: {detail}"
    return f"authorization is {authz.get('status')}"


class AcmeIssuer:
    """An ACME account at one directory; ``issue`` runs an order for one hostname."""

    def __init__(
        self,
        data_dir: Path,
        directory_url: str,
        *,
        email: str | None,
        ssl_context: ssl.SSLContext,
        challenges: Challenges,
        challenge_types: tuple[str, ...] = (HTTP01, TLS_ALPN01),
    ) -> None:
        self.description = f"ACME {directory_url}"
        self.folder = acme_server_dir(data_dir, directory_url)
        self.certs = CertDirectory(self.folder / "certs")
        self.challenges = challenges
        self.challenge_types = challenge_types
        ensure_private_dir(self.folder)
        key = self._account_key()
        self._account_file = self.folder / "account.json"
        self.client = AcmeClient(
            directory_url,
            key,
            ssl_context=ssl_context,
            email=email,
            account_url=self._saved_account_url(directory_url),
            on_account=lambda url: self._save_account(directory_url, url),
        )

    def _account_key(self) -> AccountKey:
        path = self.folder / "account-key.pem"
        data = read_file(path)
        if data is None:
            key = new_key()
            write_file(path, key_pem(key))
            return AccountKey(key)
        try:
            return AccountKey(load_key_pem(data))
        except ValueError as exc:
            raise StorageError(f"ACME account key {path} is unusable ({exc}); move it away to make a new account") from None

    def _saved_account_url(self, directory_url: str) -> str | None:
        data = read_file(self.folder / "account.json")
        if not data:
            return None
        try:
            saved = json.loads(data)
        except ValueError:
            return None
        if saved.get("directory") != directory_url:
            return None
        return saved.get("url") if isinstance(saved.get("url"), str) else None

    def _save_account(self, directory_url: str, url: str) -> None:
        record = {"directory": directory_url, "url": url, "created": time.time()}
        write_file(self._account_file, json.dumps(record, indent=2).encode())

    async def issue(self, hostname: str) -> CertPaths:
        """See ``Issuer.issue``: order, prove control of ``hostname``, finalize with a new key, download."""
        deadline = time.monotonic() + ORDER_TIMEOUT
        client = self.client
        order_url, order = await client.new_order([hostname])
        for authz_url in order.get("authorizations") or []:
            await self._authorize(hostname, authz_url, deadline)
        order = await client.poll(order_url, ("pending",), deadline)
        if order.get("status") != "ready":
            raise AcmeError(f"order for {hostname} is {order.get('status')} after validation: {order.get('error')}")
        key = new_key()
        await client.post(order["finalize"], {"csr": b64url(csr_der(key, [hostname]))})
        order = await client.poll(order_url, ("ready", "processing"), deadline)
        if order.get("status") != "valid" or not isinstance(order.get("certificate"), str):
            raise AcmeError(f"order for {hostname} is {order.get('status')} after finalizing: {order.get('error')}")
        chain = await client.download(order["certificate"])
        return self.certs.save(hostname, chain, key_pem(key))

    async def _authorize(self, hostname: str, url: str, deadline: float) -> None:
        """Answer the authorization's challenge of a type we can serve, and wait for the verdict."""
        client = self.client
        authz = await client.fetch(url)
        if authz.get("status") == "valid":
            return  # reused from an earlier order
        if authz.get("status") != "pending":
            raise AcmeError(f"authorization for {hostname} is {authz.get('status')}")
        offered = {c.get("type"): c for c in authz.get("challenges") or [] if isinstance(c, dict)}
        kind = next((t for t in self.challenge_types if t in offered), None)
        if kind is None:
            raise AcmeError(f"ACME server offers {sorted(offered)} for {hostname}; we answer {list(self.challenge_types)}")
        challenge = offered[kind]
        token = str(challenge.get("token", ""))
        self.challenges.add(kind, hostname, token, client.key.key_authorization(token))
        try:
            log.debug("ACME: answering %s for %s", kind, hostname)
            await client.post(challenge["url"], {})
            authz = await client.poll(url, ("pending",), deadline)
        finally:
            self.challenges.remove(kind, hostname, token)
        if authz.get("status") != "valid":
            raise AcmeError(f"{hostname}: {_challenge_error(authz, kind)}")

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()
