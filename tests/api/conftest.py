"""A real uvicorn server per store backend, shared by the API tests of a session.

Each test creates its own experiments, so tests never see each other's data; the
PostgreSQL database is created fresh for the test session (tests/conftest.py).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from server.app import create_app
from server.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                log_level="warning", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def service(self):  # noqa: ANN201 - test helper
        return self.app.state.service


def make_settings(database_url: str, tmp: Path, **overrides: object) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp, expiry_interval_s=0.2,
                    log_json=False, **overrides)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def live_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    """A running server on SQLite or on a fresh PostgreSQL database."""
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'beamsteer.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with LiveServer(make_settings(url, tmp)) as server:
        yield server


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        yield c


SPEC = {
    "name": "gradient-film",
    "parameters": [{"name": "x", "lower": 0, "upper": 10, "units": "mm"},
                   {"name": "y", "lower": -5, "upper": 5}],
    "outputs": [{"name": "intensity"}],
    "goal": "map",
}


@pytest.fixture
def experiment(client: httpx.Client) -> dict:
    r = client.post("/api/v1/experiments", json=SPEC)
    assert r.status_code == 201, r.text
    return r.json()
