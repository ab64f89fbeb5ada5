"""A real uvicorn server per store backend, shared by the API tests of a session.

Each test creates its own experiments, so tests never see each other's data; the
PostgreSQL database is created fresh for the test session (tests/conftest.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.live import LiveServer, free_port
from server.settings import Settings

__all__ = ["LiveServer", "free_port", "make_settings", "recv_until"]


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


def recv_until(ws, kind: str, timeout: float = 60) -> dict:  # noqa: ANN001
    """The next event of type ``kind`` on a websocket (``websockets.sync``), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if event["type"] == kind:
            return dict(event)


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
