"""The map error history: one point per refit, in the model status, across a restart."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.api.conftest import SPEC, LiveServer, make_settings, recv_until


def _f(x: float, y: float) -> float:
    return math.sin(0.6 * x) * math.cos(0.4 * y) + 0.1 * x


def _batch(start: int, size: int) -> list[dict]:
    pts = [((i * 0.37) % 10, ((i * 0.53) % 10) - 5) for i in range(start, start + size)]
    return [{"position": {"x": x, "y": y}, "values": {"intensity": _f(x, y)}} for x, y in pts]


def _tell_and_wait_for_refits(server: LiveServer, eid: str, sizes: list[int],
                              start: int) -> list[dict]:
    """Tell one batch per size; each batch is large enough to call for one refit (growth
    of max(3, 25%)), and the next is told after it: the refit events' map errors."""
    seen = []
    ws_url = server.url.replace("http", "ws") + f"/api/v1/experiments/{eid}/events"
    with httpx.Client(base_url=server.url, timeout=60) as c, connect(ws_url) as ws:
        for size in sizes:
            r = c.post(f"/api/v1/experiments/{eid}/measurements",
                       json={"measurements": _batch(start, size)})
            assert r.status_code == 201, r.text
            start += size
            ev = recv_until(ws, "refit")
            assert ev["data"]["n"] == start  # the refit saw the whole batch
            seen.append(ev["data"]["outputs"]["intensity"]["map_error"])
    return seen


def _history(server: LiveServer, eid: str) -> list[dict]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        exp = c.get(f"/api/v1/experiments/{eid}").json()
    return list(exp["map_error_history"])


def test_one_point_per_refit_that_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'beamsteer.db'}", tmp_path)
    with LiveServer(settings) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            eid = c.post("/api/v1/experiments", json=SPEC).json()["id"]
            assert c.get(f"/api/v1/experiments/{eid}").json()["map_error_history"] == []
            schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert "map_error_history" in schema["ExperimentPublic"]["properties"]
        assert set(schema["MapErrorPointPublic"]["properties"]) == {
            "n", "rms_std", "relative", "at"}
        refits = _tell_and_wait_for_refits(server, eid, [3, 3, 3, 3, 3, 4, 5], start=0)
        before = _history(server, eid)

    assert [p["n"] for p in before] == [3, 6, 9, 12, 15, 19, 24]
    assert [(p["n"], p["rms_std"], p["relative"]) for p in before] == [
        (e["n"], e["rms_std"], e["relative"]) for e in refits]
    assert all(a["at"] <= b["at"] for a, b in zip(before, before[1:], strict=False))

    with LiveServer(settings) as server:  # a new service on the same database
        assert _history(server, eid) == before
        _tell_and_wait_for_refits(server, eid, [6], start=24)  # it goes on from there
        after = _history(server, eid)
    assert after[:-1] == before and after[-1]["n"] == 30
