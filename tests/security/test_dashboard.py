"""The dashboard on a server with keys: it asks for a key on 401, works with a read key
(HTTP and the websocket), and turns read-only where the key cannot write."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from server.security import Scope
from server.security.keys import issue_key
from tests.api.conftest import SPEC, LiveServer, make_settings
from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, _require_browser
from tests.security.conftest import AUTH_CACHE_S, bearer


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201 - a playwright Browser
    """This module's own browser: Playwright's sync API runs an event loop in this thread
    while it lives, which later asyncio tests of the session must not find."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    """A server with one experiment, a read key, and nothing anonymous."""
    tmp = tmp_path_factory.mktemp("dashboard-keys")
    with LiveServer(make_settings(f"sqlite:///{tmp / 'beamsteer.db'}", tmp,
                                  auth_cache_s=AUTH_CACHE_S)) as server:
        _, admin = issue_key(server.service.store.keys, "admin", [Scope.admin])
        _, read = issue_key(server.service.store.keys, "viewer", [Scope.read])
        server.app.state.gate.authenticator.forget()
        with httpx.Client(base_url=server.url, timeout=60, headers=bearer(admin)) as c:
            eid = c.post("/api/v1/experiments", json={**SPEC, "name": "locked"}).json()["id"]
        yield server, read, eid


def test_dashboard_asks_for_a_key_then_follows_live(
        browser, locked: tuple[LiveServer, str, str]) -> None:  # noqa: ANN001
    server, read_key, eid = locked
    context = browser.new_context(service_workers="block")
    sockets: list[str] = []
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.locator("[data-testid=key-note]").wait_for(state="visible", timeout=10_000)
        assert page.locator("details.key").get_attribute("open") is not None

        page.fill("#key-form input[name=key]", read_key)
        page.click("#key-form button[type=submit]")
        page.locator(f"a[href='#/e/{eid}']").wait_for(timeout=10_000)
        assert not page.locator("[data-testid=key-note]").is_visible()
        page.locator(f"a[href='#/e/{eid}']").click()
        page.wait_for_function(
            "() => document.querySelector('[data-ref=live]').textContent === 'live'",
            timeout=15_000)
        assert any(f"api_key={read_key}" in u for u in sockets), sockets
        assert errors == []
    finally:
        context.close()
