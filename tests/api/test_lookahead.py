"""The next ask is prepared while the last suggestion is measured (GPEngine.prepare), over
a real server: the ask after the tell takes those picks."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np

from tests.api.conftest import SPEC


def _url(exp: dict, tail: str = "") -> str:
    return f"/api/v1/experiments/{exp['id']}{tail}"


def _f(p: dict) -> float:
    return float(np.sin(0.5 * p["x"]) + 0.3 * p["y"])


def _counter(client: httpx.Client, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait(what: str, ok, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.02)


def test_the_ask_after_a_tell_takes_the_prepared_picks(client: httpx.Client) -> None:
    exp = client.post("/api/v1/experiments", json={**SPEC, "acquisition": "variance"}).json()
    rng = np.random.default_rng(5)
    start = [{"position": {"x": float(x), "y": float(y)}} for x, y in
             zip(rng.uniform(0, 10, 30), rng.uniform(-5, 5, 30), strict=True)]
    r = client.post(_url(exp, "/measurements"), json={"measurements": [
        {**m, "values": {"intensity": _f(m["position"])}} for m in start]})
    assert r.status_code == 201, r.text

    def settled() -> bool:  # fitted on all 30, no refit running (it would swap the model)
        model = client.get(_url(exp)).json()["model"]
        return model["outputs"]["intensity"]["fitted_n"] == 30 and not model["refitting"]
    _wait("fitted", settled)

    for step in range(2):
        prepared = _counter(client, "beamsteer_asks_prepared_total")
        (s,) = client.post(_url(exp, "/suggestions"), json={"n": 1}).json()["suggestions"]
        assert step == 0 or s["source"] == "variance"
        _wait("prepared",
              lambda p=prepared: _counter(client, "beamsteer_asks_prepared_total") > p)
        r = client.post(_url(exp, "/measurements"), json={"measurements": [
            {"position": s["position"], "values": {"intensity": _f(s["position"])},
             "suggestion_id": s["id"]}]})
        assert r.status_code == 201, r.text
        ahead = _counter(client, "beamsteer_suggestions_ahead_total")
        (nxt,) = client.post(_url(exp, "/suggestions"), json={"n": 1}).json()["suggestions"]
        assert _counter(client, "beamsteer_suggestions_ahead_total") == ahead + 1
        assert nxt["position"] != s["position"] and nxt["status"] == "pending"
        # the reply's posterior is that after the tell: the measured spot is now known
        at = [[nxt["position"]["x"], nxt["position"]["y"]]]
        post = client.post(_url(exp, "/posterior"), json={"points": at}).json()
        now = post["outputs"]["intensity"]
        assert abs(now["mean"][0] - nxt["mean"]["intensity"]) < 1e-9
        assert abs(now["std"][0] - nxt["std"]["intensity"]) < 1e-9
        client.delete(_url(exp, f"/suggestions/{nxt['id']}"))
