"""A real headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser) driven by
Playwright against a real uvicorn server on SQLite.

Every request the page makes is recorded; one that would leave the loopback interface is
aborted and fails the test, as does any console error or uncaught exception.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.conftest import LiveServer, make_settings

CHROMIUM = os.environ.get("BEAMSTEER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _require_browser() -> None:
    missing = []
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright; "
                       "never `playwright install`: the tests use Debian's chromium)")
    if not missing:
        return
    reason = "dashboard tests need " + " and ".join(missing)
    if os.environ.get("BEAMSTEER_TEST_REQUIRE_SERVICES"):  # CI: a missing browser fails
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the dashboard tests; each test creates its own experiments."""
    tmp = tmp_path_factory.mktemp("dashboard-server")
    with LiveServer(make_settings(f"sqlite:///{tmp / 'beamsteer.db'}", tmp)) as live:
        yield live


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201 - a playwright Browser
    """One browser per module, not per session: Playwright's sync API runs an event loop in
    this thread while it lives, which another module's browser (or asyncio test) must not
    find."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Recorder:
    """What the page did: every request (method, URL), websockets, and console errors."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def writes(self) -> list[tuple[str, str]]:
        """Requests that could change state (a posterior POST is a read)."""
        return [(m, u) for m, u in self.requests
                if m not in ("GET", "HEAD") and not urlsplit(u).path.endswith("/posterior")]


@dataclass
class Page:
    page: object  # playwright Page
    rec: Recorder
    url: str


@pytest.fixture
def page(browser, server: LiveServer) -> Iterator[Page]:  # noqa: ANN001
    """A fresh browser context and page; on teardown, no errors and nothing non-local."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000},
                                  color_scheme="light", service_workers="block")
    rec = Recorder()

    def route(r) -> None:  # noqa: ANN001
        url = r.request.url
        rec.requests.append((r.request.method, url))
        if urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            rec.blocked.append(url)
            r.abort()

    context.route("**/*", route)
    p = context.new_page()
    p.on("console", lambda m: rec.errors.append(m.text) if m.type in ("error", "warning") else None)
    p.on("pageerror", lambda e: rec.errors.append(f"uncaught: {e}"))
    p.on("websocket", lambda ws: rec.websockets.append(ws.url))
    try:
        yield Page(p, rec, server.url)
    finally:
        context.close()
    assert not rec.blocked, f"requests leaving localhost: {rec.blocked}"
    assert not rec.errors, f"console errors: {rec.errors}"
    for u in rec.websockets:
        assert urlsplit(u).hostname in LOCAL_HOSTS, u
