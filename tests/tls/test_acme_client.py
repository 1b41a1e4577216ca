"""The ACME client: signatures checked by hand, and its retries against a scripted server on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from relay_server.tls.acme.client import AcmeClient, AcmeError
from relay_server.tls.acme.jws import AccountKey
from relay_server.tls.keys import new_key


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_signed_request_verifies_with_the_account_public_key() -> None:
    key = AccountKey(new_key())

    body = json.loads(key.sign("https://ca.test/new-order", "nonce-1", {"identifiers": []}, kid="https://ca.test/acct/1"))

    protected = json.loads(unb64(body["protected"]))
    assert protected == {"alg": "ES256", "nonce": "nonce-1", "url": "https://ca.test/new-order", "kid": "https://ca.test/acct/1"}
    assert json.loads(unb64(body["payload"])) == {"identifiers": []}
    raw = unb64(body["signature"])
    assert len(raw) == 64
    signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signed = f"{body['protected']}.{body['payload']}".encode()
    key.key.public_key().verify(signature, signed, ec.ECDSA(hashes.SHA256()))  # raises if wrong


def test_a_new_account_request_carries_the_jwk_and_post_as_get_an_empty_payload() -> None:
    key = AccountKey(new_key())

    body = json.loads(key.sign("https://ca.test/acct", "n", None))

    assert json.loads(unb64(body["protected"]))["jwk"] == key.jwk
    assert body["payload"] == ""


def test_the_thumbprint_is_the_rfc_7638_hash_of_the_canonical_jwk() -> None:
    key = AccountKey(new_key())
    numbers = key.key.public_key().public_numbers()
    x = base64.urlsafe_b64encode(numbers.x.to_bytes(32, "big")).rstrip(b"=").decode()
    y = base64.urlsafe_b64encode(numbers.y.to_bytes(32, "big")).rstrip(b"=").decode()
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'.encode()

    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()

    assert key.thumbprint == expected
    assert key.key_authorization("tok") == f"tok.{expected}"


class ScriptedCA:
    """A tiny ACME server: a directory, nonces, and POST handlers the test scripts."""

    def __init__(self) -> None:
        self.counter = 0
        self.bad_nonces_left = 0
        self.forget_account_once = False
        self.accounts = 0
        self.posts: list[str] = []

    def nonce(self) -> str:
        self.counter += 1
        return f"nonce-{self.counter}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/dir", self.directory)
        app.router.add_route("HEAD", "/nonce", self.new_nonce)
        app.router.add_post("/{what}", self.post)
        return app

    async def directory(self, request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response({"newNonce": f"{base}/nonce", "newAccount": f"{base}/account", "newOrder": f"{base}/order"})

    async def new_nonce(self, request: web.Request) -> web.Response:
        return web.Response(headers={"Replay-Nonce": self.nonce()})

    async def post(self, request: web.Request) -> web.Response:
        what = request.match_info["what"]
        self.posts.append(what)
        headers = {"Replay-Nonce": self.nonce()}
        problem = {"Content-Type": "application/problem+json", **headers}
        if self.bad_nonces_left:
            self.bad_nonces_left -= 1
            body = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "stale"}
            return web.Response(status=400, text=json.dumps(body), headers=problem)
        if what == "account":
            self.accounts += 1
            headers["Location"] = f"http://{request.host}/acct/{self.accounts}"
            return web.json_response({"status": "valid"}, status=201, headers=headers)
        if what == "order":
            if self.forget_account_once:
                self.forget_account_once = False
                body = {"type": "urn:ietf:params:acme:error:accountDoesNotExist", "detail": "who?"}
                return web.Response(status=400, text=json.dumps(body), headers=problem)
            headers["Location"] = f"http://{request.host}/order/1"
            return web.json_response({"status": "pending", "authorizations": []}, status=201, headers=headers)
        body = {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "not on my watch"}
        return web.Response(status=403, text=json.dumps(body), headers=problem)


@pytest.fixture
async def scripted_ca() -> AsyncIterator[tuple[ScriptedCA, AcmeClient]]:
    ca = ScriptedCA()
    runner = web.AppRunner(ca.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = AcmeClient(f"http://127.0.0.1:{site.port}/dir", AccountKey(new_key()), ssl_context=ssl.create_default_context())
    try:
        yield ca, client
    finally:
        await client.close()
        await runner.cleanup()


async def test_bad_nonce_problems_are_retried_with_a_fresh_nonce(scripted_ca: tuple[ScriptedCA, AcmeClient]) -> None:
    ca, client = scripted_ca
    ca.bad_nonces_left = 3

    url, order = await client.new_order(["demo.example.com"])

    assert url.endswith("/order/1") and order["status"] == "pending"
    assert ca.posts == ["account"] * 4 + ["order"]


async def test_an_account_the_server_forgot_is_registered_again_once(scripted_ca: tuple[ScriptedCA, AcmeClient]) -> None:
    ca, client = scripted_ca
    await client.ensure_account()
    ca.forget_account_once = True

    await client.new_order(["demo.example.com"])

    assert ca.accounts == 2
    assert client.account_url.endswith("/acct/2")


async def test_a_problem_document_becomes_one_readable_error(scripted_ca: tuple[ScriptedCA, AcmeClient]) -> None:
    ca, client = scripted_ca
    base = client.directory_url.rsplit("/", 1)[0]

    with pytest.raises(AcmeError) as caught:
        await client.post(f"{base}/finalize", {"csr": "x"})

    assert str(caught.value) == "rejectedIdentifier: not on my watch"
    assert caught.value.status == 403


async def test_an_unreachable_directory_is_one_readable_error() -> None:
    client = AcmeClient("http://127.0.0.1:9/dir", AccountKey(new_key()), ssl_context=ssl.create_default_context())
    try:
        with pytest.raises(AcmeError, match="cannot reach ACME server at http://127.0.0.1:9/dir"):
            await client.directory()
    finally:
        await client.close()
