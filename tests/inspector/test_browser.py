"""The inspector page in a real browser: Debian's chromium, headless, driven by Selenium.

Needs ``apt-get install -y chromium chromium-driver`` (skipped with that
reason if either is missing) and the ``selenium`` package. Set
``LOCALRELAY_SCREENSHOT=PATH`` to also save the screenshot there (the one in
``docs/inspector.png`` comes from this test).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.clients import make_client
from support.localrelay import Relay

from .live import LiveTunnel, all_done, live_tunnel, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: Seconds any wait in the browser may take.
BROWSER_WAIT = 20.0

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="Debian's chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)",
)


def _driver(profile: Path) -> Any:
    """Headless chromium through Debian's chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-proxy-server", "--window-size=1440,1000", f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, BROWSER_WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {BROWSER_WAIT:g}s") from None


_ROWS_JS = """
return [...document.querySelectorAll('#list li.row')].map(
  (r) => [r.dataset.id, r.querySelector('.m').textContent, r.querySelector('.p').title, r.classList.contains('replay')]);
"""


def _rows(driver: Any) -> list[tuple[str, str, bool]]:
    """The list as the user sees it, top to bottom: (method, path, is_replay)."""
    return [(method, path, replay) for _id, method, path, replay in driver.execute_script(_ROWS_JS)]


def _click_row(driver: Any, path: str, replay: bool = False) -> None:
    """Click (as a user does) the first row for ``path``; the list re-renders live, so retry a stale row."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _attempt in range(20):
        ids = [i for i, _m, p, r in driver.execute_script(_ROWS_JS) if p == path and r == replay]
        assert ids, f"no row for {path}"
        try:
            driver.find_element(By.CSS_SELECTOR, f'#list li.row[data-id="{ids[0]}"]').click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"the row for {path} kept changing under the click")


def _detail_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "view").text


async def _traffic(live: LiveTunnel, client: aiohttp.ClientSession) -> None:
    calls = [
        client.get(f"{live.public_url}/openapi.yaml"),
        client.get(f"{live.public_url}/pixel.png"),
        client.get(f"{live.public_url}/api/todos?done=false", headers={"Accept": "application/json"}),
    ]
    for call in calls:
        async with call as response:
            await response.read()


async def test_the_page_shows_requests_live_and_replays_one(
    open_relay: Relay, origin_url: str, tmp_path: Path
) -> None:
    async with live_tunnel(open_relay.server_url, origin_url) as live, make_client() as client:
        driver = await asyncio.to_thread(_driver, tmp_path / "profile")
        try:
            await asyncio.to_thread(driver.get, live.inspector.url)
            await asyncio.to_thread(_wait, driver, lambda d: d.find_element("id", "live").text == "live", "the live feed connected")
            assert await asyncio.to_thread(_rows, driver) == []

            await _traffic(live, client)
            async with client.post(
                f"{live.public_url}/api/todos", json={"title": "water the plants", "tags": ["home"]}
            ) as response:
                assert response.status == 200
            await wait_for(lambda: len(live.recorder) == 4 and all_done(live.recorder), "four requests recorded")
            rows = await asyncio.to_thread(
                _wait, driver, lambda d: len(r := _rows(d)) == 4 and r, "four requests without a reload"
            )
            assert rows[0] == ("POST", "/api/todos", False)
            assert [path for _, path, _ in rows] == ["/api/todos", "/api/todos?done=false", "/pixel.png", "/openapi.yaml"]

            await asyncio.to_thread(_click_row, driver, "/api/todos")
            text = await asyncio.to_thread(_wait, driver, lambda d: "water the plants" in _detail_text(d) and _detail_text(d), "the detail")
            assert '"title": "water the plants"' in text  # pretty-printed JSON
            await asyncio.to_thread(lambda: driver.find_element("id", "replay-btn").click())
            rows = await asyncio.to_thread(
                _wait, driver, lambda d: len(r := _rows(d)) == 5 and r[0][2] and r, "the replayed entry"
            )
            assert rows[0] == ("POST", "/api/todos", True)
            replay = next(live.recorder.newest_first())
            assert replay.replay and replay.status == 200
            text = await asyncio.to_thread(_wait, driver, lambda d: "Replay of POST /api/todos" in _detail_text(d) and _detail_text(d), "the replay notice")
            assert "water the plants" in text

            await asyncio.to_thread(driver.find_element("id", "f-status").send_keys, "2xx")
            await asyncio.to_thread(driver.find_element("id", "f-path").send_keys, "todos")
            rows = await asyncio.to_thread(_wait, driver, lambda d: len(r := _rows(d)) == 3 and r, "the filtered list")
            assert {path for _, path, _ in rows} == {"/api/todos", "/api/todos?done=false"}
            await asyncio.to_thread(driver.find_element("id", "f-path").clear)
            await asyncio.to_thread(driver.find_element("id", "f-status").clear)

            shot = tmp_path / "inspector.png"
            await asyncio.to_thread(_click_row, driver, "/api/todos")
            await asyncio.to_thread(_wait, driver, lambda d: "water the plants" in _detail_text(d), "the detail again")
            assert await asyncio.to_thread(driver.save_screenshot, str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("LOCALRELAY_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["LOCALRELAY_SCREENSHOT"])
        finally:
            await asyncio.to_thread(driver.quit)


async def test_the_page_shows_images_yaml_and_binary_bodies(open_relay: Relay, origin_url: str, tmp_path: Path) -> None:
    async with live_tunnel(open_relay.server_url, origin_url) as live, make_client() as client:
        await _traffic(live, client)
        async with client.post(f"{live.public_url}/upload", data=bytes(range(256)), headers={"Content-Type": "application/octet-stream"}) as response:
            await response.read()
        await wait_for(lambda: len(live.recorder) == 4 and all_done(live.recorder), "four requests recorded")
        driver = await asyncio.to_thread(_driver, tmp_path / "profile")
        try:
            await asyncio.to_thread(driver.get, live.inspector.url)
            await asyncio.to_thread(_wait, driver, lambda d: len(_rows(d)) == 4, "the history")

            await asyncio.to_thread(_click_row, driver, "/pixel.png")
            loaded = "return [...document.querySelectorAll('#view img')].map(i => i.complete && i.naturalWidth)"
            widths = await asyncio.to_thread(_wait, driver, lambda d: (w := d.execute_script(loaded)) and w, "the image")
            assert widths == [1]

            await asyncio.to_thread(_click_row, driver, "/openapi.yaml")
            await asyncio.to_thread(_wait, driver, lambda d: "listTodos" in _detail_text(d), "the YAML body")
            keys = await asyncio.to_thread(driver.execute_script, "return [...document.querySelectorAll('#view pre .k')].map(k => k.textContent)")
            assert {"openapi", "title", "operationId"} <= set(keys)

            await asyncio.to_thread(_click_row, driver, "/upload")
            text = await asyncio.to_thread(_wait, driver, lambda d: "Binary, 256 B" in _detail_text(d) and _detail_text(d), "the hex dump")
            assert "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f" in text
        finally:
            await asyncio.to_thread(driver.quit)
