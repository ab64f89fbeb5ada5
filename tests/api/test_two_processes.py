"""Two API processes on one PostgreSQL and one Redis, as a deployment with two replicas.

Asks taken by either process never propose the same pending spot (the store's advisory
lock), each engine learns the measurements the other process stored, and websocket
clients of either process see the events of both (Redis pub/sub).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.conftest import SPEC, recv_until
from tests.api.processes import ServerProcess


@pytest.fixture
def pair(postgres_url: str, redis_url: str, redis_prefix: str,
         tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {"BEAMSTEER_REDIS_URL": redis_url, "BEAMSTEER_REDIS_PREFIX": redis_prefix}
    procs = (ServerProcess(postgres_url, tmp_path, **env),
             ServerProcess(postgres_url, tmp_path, **env))
    try:
        starters = [threading.Thread(target=p.start) for p in procs]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        for p in procs:  # a start that raised left no healthy server
            assert httpx.get(f"{p.url}/health", timeout=5).status_code == 200
        yield procs
    finally:
        for p in procs:
            p.stop()


def _f(x: float, y: float) -> float:
    return 0.3 * x - 0.1 * y + 1.0


def _tell(c: httpx.Client, url: str, points: list[tuple[float, float]], tag: str) -> None:
    r = c.post(f"{url}/measurements", json={"measurements": [
        {"position": {"x": x, "y": y}, "values": {"intensity": _f(x, y)}, "key": f"{tag}-{i}"}
        for i, (x, y) in enumerate(points)]})
    assert r.status_code == 201, r.text


def test_asks_on_two_processes_never_share_a_spot(
        pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as ca, \
            httpx.Client(base_url=b.url, timeout=60) as cb:
        exp = ca.post("/api/v1/experiments", json={**SPEC, "initial_design": 4}).json()
        url = f"/api/v1/experiments/{exp['id']}"
        _tell(cb, url, [(1, -4), (3, 2), (5, 0), (7, 3), (9, -2), (2, 4)], "b")

        def ask(i: int) -> list[dict]:
            c = (ca, cb)[i % 2]
            r = c.post(f"{url}/suggestions", json={"n": 1 + i % 3})
            assert r.status_code == 201, r.text
            return r.json()["suggestions"]

        with ThreadPoolExecutor(8) as pool:
            batches = list(pool.map(ask, range(24)))
        got = [s for batch in batches for s in batch]
        assert len(got) == sum(1 + i % 3 for i in range(24))
        assert len({s["id"] for s in got}) == len(got)
        spots = [(round(s["position"]["x"], 9), round(s["position"]["y"], 9)) for s in got]
        assert len(set(spots)) == len(spots), "two asks proposed the same spot"
        pending = ca.get(f"{url}/suggestions", params={"status": "pending"}).json()
        assert {s["id"] for s in pending["suggestions"]} == {s["id"] for s in got}


def test_each_process_learns_the_others_measurements(
        pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as ca, \
            httpx.Client(base_url=b.url, timeout=60) as cb:
        exp = ca.post("/api/v1/experiments", json=SPEC).json()
        url = f"/api/v1/experiments/{exp['id']}"
        assert cb.get(url).json()["model"]["n"] == 0  # B holds an engine from now on
        points = [(x, y) for x in (0.5, 3, 5.5, 8, 9.5) for y in (-4, -1, 2, 4.5)]
        _tell(ca, url, points, "a")
        info = cb.get(url).json()
        assert info["n_measurements"] == 20 and info["model"]["n"] == 20
        deadline = time.monotonic() + 60  # B's first fit of A's data runs in the background
        while True:
            r = cb.post(f"{url}/posterior", json={"points": [[3, -1], [8, 2]]})
            assert r.status_code == 200, r.text
            mean = r.json()["outputs"]["intensity"]["mean"]
            if None not in mean or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert mean == pytest.approx([_f(3, -1), _f(8, 2)], abs=0.05)
        _tell(cb, url, [(1, 1), (6, -3)], "b")  # and back: A catches up on B's
        assert ca.get(url).json()["model"]["n"] == 22


def test_events_reach_websockets_of_both_processes(
        pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as ca:
        exp = ca.post("/api/v1/experiments", json=SPEC).json()
        path = f"/api/v1/experiments/{exp['id']}"
        with connect(a.url.replace("http", "ws") + f"{path}/events") as wa, \
                connect(b.url.replace("http", "ws") + f"{path}/events") as wb:
            assert json.loads(wa.recv(timeout=10))["type"] == "hello"
            assert json.loads(wb.recv(timeout=10))["type"] == "hello"
            _tell(ca, path, [(2, 2), (4, -2)], "a")
            for ws in (wa, wb):  # told through A: both processes' clients hear it, once
                ev = recv_until(ws, "measurements", 15)
                assert [m["key"] for m in ev["data"]["measurements"]] == ["a-0", "a-1"]
            with httpx.Client(base_url=b.url, timeout=60) as cb:
                batch = cb.post(f"{path}/suggestions", json={"n": 2}).json()["suggestions"]
            for ws in (wa, wb):
                ev = recv_until(ws, "suggestions", 15)
                assert [s["id"] for s in ev["data"]["suggestions"]] == [s["id"] for s in batch]
            # No event arrives twice: after a marker event, nothing repeats what came before.
            ca.patch(path, json={"status": "paused"})
            for ws in (wa, wb):
                seen: list[str] = []
                while True:
                    ev = json.loads(ws.recv(timeout=15))
                    seen.append(ev["type"])
                    if ev["type"] == "status":
                        break
                assert "measurements" not in seen and "suggestions" not in seen, seen


def _metric(c: httpx.Client, name: str) -> float:
    line = next((ln for ln in c.get("/metrics").text.splitlines()
                 if ln.startswith(f"{name} ")), None)
    return 0.0 if line is None else float(line.split()[1])


def _wait_until(what: str, ok, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.05)


def test_prepared_asks_see_what_the_other_process_did(
        pair: tuple[ServerProcess, ServerProcess]) -> None:
    """A prepares its next ask while its suggestion is measured; the tell goes to B. A's
    next ask catches up and takes the prepared picks, unless B also handed out a
    suggestion meanwhile: then A asks afresh and never proposes B's pending spot. Every
    tell goes to B (a proxy that spreads requests): A learns how long the loop measures
    from when B stored them."""
    a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as ca, \
            httpx.Client(base_url=b.url, timeout=60) as cb:
        exp = ca.post("/api/v1/experiments", json={**SPEC, "acquisition": "variance"}).json()
        url = f"/api/v1/experiments/{exp['id']}"
        points = [(x, y) for x in (0.5, 2.5, 4.5, 6.5, 8.5, 9.5) for y in (-4, -2, 0, 2, 4)]
        _tell(ca, url, points, "start")
        for c in (ca, cb):  # both engines fitted on all 30, no refit running
            _wait_until("fitted", lambda c=c: (
                (m := c.get(url).json()["model"])["outputs"]["intensity"]["fitted_n"] == 30
                and not m["refitting"]))

        def ask(c: httpx.Client) -> dict:
            r = c.post(f"{url}/suggestions", json={"n": 1})
            assert r.status_code == 201, r.text
            return dict(r.json()["suggestions"][0])

        def tell(c: httpx.Client, s: dict) -> None:
            p = s["position"]
            r = c.post(f"{url}/measurements", json={"measurements": [
                {"position": p, "values": {"intensity": _f(p["x"], p["y"])},
                 "suggestion_id": s["id"]}]})
            assert r.status_code == 201, r.text

        first = ask(ca)
        time.sleep(0.3)  # A learns that this loop measures for a while ...
        tell(cb, first)  # ... at its next ask, from the stored time of B's tell
        for others_ask in (False, True):
            prepared = _metric(ca, "beamsteer_asks_prepared_total")
            s = ask(ca)
            _wait_until("prepared", lambda p=prepared: _metric(
                ca, "beamsteer_asks_prepared_total") > p)
            tell(cb, s)  # A's engine is now one measurement behind the store
            theirs = ask(cb) if others_ask else None
            ahead = _metric(ca, "beamsteer_suggestions_ahead_total")
            mine = ask(ca)
            took = _metric(ca, "beamsteer_suggestions_ahead_total") - ahead
            assert took == (0 if others_ask else 1)
            if theirs is not None:
                assert mine["position"] != theirs["position"]
                ca.delete(f"{url}/suggestions/{theirs['id']}")
            time.sleep(0.3)  # measured a while, as a loop A prepares for
            tell(cb, mine)
