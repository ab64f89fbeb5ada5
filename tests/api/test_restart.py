"""Kill the server with SIGKILL right after acknowledged writes; restart; nothing is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import SPEC
from tests.api.processes import ServerProcess


@pytest.fixture(params=["sqlite", "postgresql"])
def server_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'beamsteer.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    proc = ServerProcess(url, tmp_path)
    yield proc
    proc.stop()


def _f(x: float, y: float) -> float:
    return x * 0.3 - y * 0.1 + 1.0


def test_sigkill_loses_nothing_acknowledged(server_process: ServerProcess) -> None:
    server_process.start()
    with httpx.Client(base_url=server_process.url, timeout=30) as c:
        _run_then_kill_then_check(server_process, c)


def _run_then_kill_then_check(server_process: ServerProcess, c: httpx.Client) -> None:
    exp = c.post("/api/v1/experiments", json={**SPEC, "initial_design": 3}).json()
    url = f"/api/v1/experiments/{exp['id']}"
    # a few rounds, then a batch left pending
    for _ in range(3):
        s = c.post(f"{url}/suggestions", json={"n": 2}).json()["suggestions"]
        c.post(f"{url}/measurements", json={"measurements": [
            {"position": x["position"], "values": {"intensity": _f(**x["position"])},
             "suggestion_id": x["id"], "key": x["id"]} for x in s]})
    pending = c.post(f"{url}/suggestions", json={"n": 3}).json()["suggestions"]

    # a stream of measurements from another thread; the kill lands in the middle of it
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server_process.url, timeout=5) as sc:
            for i in range(10_000):
                if stop.is_set():
                    return
                key = f"stream-{i}"
                x, y = (i * 0.37) % 10, ((i * 0.53) % 10) - 5
                try:
                    r = sc.post(f"{url}/measurements", json={"measurements": [
                        {"position": {"x": x, "y": y}, "values": {"intensity": _f(x, y)},
                         "key": key}]})
                except httpx.TransportError:
                    return
                if r.status_code == 201:
                    acked.append(key)

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    server_process.kill()
    stop.set()
    t.join(30)
    assert len(acked) >= 25

    server_process.start()
    stored = c.get(f"{url}/measurements", params={"limit": 100_000}).json()["measurements"]
    keys = {m["key"] for m in stored}
    assert set(acked) <= keys, f"lost {sorted(set(acked) - keys)[:5]}"
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
    still = c.get(f"{url}/suggestions", params={"status": "pending"}).json()["suggestions"]
    assert {s["id"] for s in still} == {s["id"] for s in pending}
    nxt = c.post(f"{url}/suggestions", json={"n": 2})
    assert nxt.status_code == 201, nxt.text
    old = {(s["position"]["x"], s["position"]["y"]) for s in pending}
    assert not old & {(s["position"]["x"], s["position"]["y"])
                      for s in nxt.json()["suggestions"]}
    info = c.get(url).json()
    assert info["n_measurements"] == len(stored) and info["model"]["n"] == len(stored)
