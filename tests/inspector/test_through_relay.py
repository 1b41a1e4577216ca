"""The inspector with real traffic: relay and origin processes on 127.0.0.1, an in-process agent."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import aiohttp
import pytest
from support import payloads
from support.clients import make_client
from support.localrelay import Origin, Relay

from .live import LiveTunnel, all_done, live_tunnel, newest, wait_for

KB, MB = 1024, 1_000_000


@pytest.fixture
async def client() -> aiohttp.ClientSession:
    """A public-side client that resolves *.localhost to 127.0.0.1."""
    async with make_client() as session:
        yield session


def _body(raw_b64: str) -> bytes:
    return base64.b64decode(raw_b64).split(b"\r\n\r\n", 1)[1]


async def _api(live: LiveTunnel, path: str, **params: str) -> dict:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{live.inspector.url}{path}", params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_tunneled_request_shows_in_the_api_with_ngrok_fields(
    open_relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    async with live_tunnel(open_relay.server_url, origin.url) as live:
        async with client.get(f"{live.public_url}/hello?x=1", headers={"X-Trace": "abc"}) as response:
            assert response.status == 200
            delivered = await response.read()
        await wait_for(lambda: len(live.recorder) == 1 and all_done(live.recorder), "the request recorded")

        tunnels = await _api(live, "/api/tunnels")
        [tunnel] = tunnels["tunnels"]
        assert tunnel["public_url"] == live.public_url
        assert tunnel["name"] == live.agent.state.name
        assert tunnel["config"]["addr"] == f"http://127.0.0.1:{origin.port}"
        assert tunnel["metrics"]["http"]["count"] == 1

        [captured] = (await _api(live, "/api/requests/http"))["requests"]
        assert captured["tunnel_name"] == live.agent.state.name
        assert captured["remote_addr"] == "127.0.0.1"
        assert captured["request"]["method"] == "GET"
        assert captured["request"]["uri"] == "/hello?x=1"
        assert captured["request"]["headers"]["X-Trace"] == ["abc"]
        assert captured["request"]["headers"]["Host"] == [live.public_url.removeprefix("http://")]
        assert captured["response"]["status_code"] == 200
        assert captured["response"]["headers"]["Content-Type"] == ["application/json; charset=utf-8"]
        assert _body(captured["response"]["raw"]) == delivered
        assert captured["duration"] > 0
        assert json.loads(delivered)["raw_path"] == "/hello?x=1"


async def test_a_replayed_request_reaches_the_local_server_again_and_is_recorded(
    open_relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    async with live_tunnel(open_relay.server_url, origin.url) as live:
        async with client.post(f"{live.public_url}/orders", data=b'{"qty": 2}', headers={"Content-Type": "application/json"}) as response:
            first = await response.json()
        await wait_for(lambda: all_done(live.recorder) and len(live.recorder) == 1, "the POST recorded")
        original = newest(live.recorder)

        replay_url = f"{live.inspector.url}/api/requests/http"
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(replay_url, json={"id": original.id}) as response:
            assert response.status == 204, await response.text()
            replay_id = response.headers["X-Replay-Id"]

        detail = await _api(live, f"/api/requests/http/{replay_id}")
        assert detail["localrelay"]["replay"] is True
        assert detail["response"]["status_code"] == 200
        again = json.loads(_body(detail["response"]["raw"]))
        assert again["method"] == "POST" and again["raw_path"] == "/orders"
        assert base64.b64decode(again["body_b64"]) == b'{"qty": 2}' == base64.b64decode(first["body_b64"])
        listed = (await _api(live, "/api/requests/http"))["requests"]
        assert [r["id"] for r in listed] == [replay_id, original.id]


async def test_history_stays_at_its_bound_when_more_requests_pass(
    open_relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    bound, sent = 20, 65
    async with live_tunnel(open_relay.server_url, origin.url, history=bound) as live:
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with gate, client.get(f"{live.public_url}/n/{i}") as response:
                assert response.status == 200
                await response.read()

        await asyncio.gather(*(one(i) for i in range(sent)))
        await wait_for(lambda: live.recorder.metrics.http.count == sent, "every request finished")
        assert len(live.recorder) == bound
        listed = (await _api(live, "/api/requests/http"))["requests"]
        assert len(listed) == bound
        assert (await _api(live, "/api/tunnels"))["tunnels"][0]["metrics"]["http"]["count"] == sent
        kept = {r["request"]["uri"] for r in listed}
        assert kept <= {f"/n/{i}" for i in range(sent)}


async def test_a_large_body_is_truncated_in_capture_but_delivered_whole(
    open_relay: Relay, origin: Origin, client: aiohttp.ClientSession
) -> None:
    limit = 64 * KB
    up_size, down_size = 3 * MB + 5, 5 * MB + 3
    upload = payloads.payload(33, up_size)
    async with live_tunnel(open_relay.server_url, origin.url, capture_limit=limit) as live:
        async with client.put(f"{live.public_url}/_o/upload", data=upload) as response:
            info = await response.json()
        assert info["length"] == up_size and info["sha256"] == hashlib.sha256(upload).hexdigest()

        async with client.get(f"{live.public_url}/_o/download?size={down_size}&seed=44") as response:
            downloaded = await response.read()
        assert len(downloaded) == down_size
        assert hashlib.sha256(downloaded).hexdigest() == payloads.sha256_hex(44, down_size)

        await wait_for(lambda: len(live.recorder) == 2 and all_done(live.recorder), "both transfers recorded")
        download, upload_entry = (await _api(live, "/api/requests/http"))["requests"]
        assert _body(upload_entry["request"]["raw"]) == upload[:limit]
        assert upload_entry["localrelay"]["request_bytes"] == up_size
        assert upload_entry["localrelay"]["request_truncated"] is True
        assert _body(download["response"]["raw"]) == downloaded[:limit]
        assert download["localrelay"]["response_bytes"] == down_size
        assert download["localrelay"]["response_truncated"] is True

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            replay_url = f"{live.inspector.url}/api/requests/http"
            async with session.post(replay_url, json={"id": upload_entry["id"]}) as response:
                assert response.status == 400
                assert "truncated" in (await response.json())["msg"]
            async with session.post(replay_url, json={"id": upload_entry["id"], "body": "small"}) as response:
                assert response.status == 204
        replayed = json.loads(newest(live.recorder).response_body)
        assert replayed["length"] == 5 and replayed["method"] == "PUT"
