"""SQLite locked by another process past the busy timeout: writes get a clean 503 with
Retry-After, reads go on (WAL), and everything works again once the lock is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from server.live import LiveServer
from server.store import engine as store_engine
from tests.api.conftest import SPEC, make_settings


def test_locked_sqlite_is_503_then_recovers(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_engine, "SQLITE_BUSY_TIMEOUT_MS", 200)  # not 30 s of waiting
    path = tmp_path / "beamsteer.db"
    m = {"position": {"x": 1.0, "y": 0.0}, "values": {"intensity": 1.0}, "key": "k1"}
    with LiveServer(make_settings(f"sqlite:///{path}", tmp_path)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        url = f"/api/v1/experiments/{c.post('/api/v1/experiments', json=SPEC).json()['id']}"
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")  # e.g. a backup tool or a stuck second server
            tell = c.post(f"{url}/measurements", json={"measurements": [m]})
            ask = c.post(f"{url}/suggestions", json={"n": 1})
            read = c.get(f"{url}/measurements")
        finally:
            other.execute("ROLLBACK")
            other.close()
        again = c.post(f"{url}/measurements", json={"measurements": [m]})
        stored = c.get(f"{url}/measurements").json()["measurements"]
    for r in (tell, ask):
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        (item,) = r.json()["detail"]
        assert item["type"] == "store_unavailable" and "database is locked" in item["msg"]
    assert read.status_code == 200 and read.json()["measurements"] == []
    assert again.status_code == 201 and again.json()["created"] == [True]
    assert [s["key"] for s in stored] == ["k1"]
