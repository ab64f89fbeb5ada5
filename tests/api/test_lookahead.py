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


def _fitted_experiment(client: httpx.Client, acquisition: str) -> dict:
    """An experiment with 30 measurements, fitted on all of them, no refit running."""
    exp = client.post("/api/v1/experiments", json={**SPEC, "acquisition": acquisition}).json()
    rng = np.random.default_rng(5)
    start = [{"position": {"x": float(x), "y": float(y)}} for x, y in
             zip(rng.uniform(0, 10, 30), rng.uniform(-5, 5, 30), strict=True)]
    r = client.post(_url(exp, "/measurements"), json={"measurements": [
        {**m, "values": {"intensity": _f(m["position"])}} for m in start]})
    assert r.status_code == 201, r.text

    def settled() -> bool:  # a refit finishing later would swap the model under the test
        model = client.get(_url(exp)).json()["model"]
        return model["outputs"]["intensity"]["fitted_n"] == 30 and not model["refitting"]
    _wait("fitted", settled)
    return exp


def _ask(client: httpx.Client, exp: dict, n: int) -> list[dict]:
    r = client.post(_url(exp, "/suggestions"), json={"n": n})
    assert r.status_code == 201, r.text
    return list(r.json()["suggestions"])


def _tell(client: httpx.Client, exp: dict, batch: list[dict]) -> None:
    r = client.post(_url(exp, "/measurements"), json={"measurements": [
        {"position": s["position"], "values": {"intensity": _f(s["position"])},
         "suggestion_id": s["id"]} for s in batch]})
    assert r.status_code == 201, r.text


def _ask_prepared(client: httpx.Client, exp: dict) -> dict:
    """Ask one position, wait until the server prepared the next ask, and "measure" a
    while longer: the server prepares only for loops that measure at least as long as an
    ask computes (on a loaded machine the low-priority preparing is slow too)."""
    prepared = _counter(client, "beamsteer_asks_prepared_total")
    (s,) = _ask(client, exp, 1)
    _wait("prepared", lambda: _counter(client, "beamsteer_asks_prepared_total") > prepared)
    time.sleep(0.3)
    return s


def test_the_ask_after_a_tell_takes_the_prepared_picks(client: httpx.Client) -> None:
    exp = _fitted_experiment(client, "variance")
    first = _ask(client, exp, 1)
    time.sleep(0.3)  # the server learns that this loop measures for a while
    _tell(client, exp, first)
    for _ in range(2):
        s = _ask_prepared(client, exp)
        _tell(client, exp, [s])
        ahead = _counter(client, "beamsteer_suggestions_ahead_total")
        nxt = _ask_prepared(client, exp)  # waited for: no prepare left running
        assert _counter(client, "beamsteer_suggestions_ahead_total") == ahead + 1
        assert nxt["position"] != s["position"] and nxt["source"] == "variance"
        # the reply's posterior is that after the tell: the measured spot is now known
        at = [[nxt["position"]["x"], nxt["position"]["y"]]]
        post = client.post(_url(exp, "/posterior"), json={"points": at}).json()
        now = post["outputs"]["intensity"]
        assert abs(now["mean"][0] - nxt["mean"]["intensity"]) < 1e-9
        assert abs(now["std"][0] - nxt["std"]["intensity"]) < 1e-9
        client.delete(_url(exp, f"/suggestions/{nxt['id']}"))
    # another suggestion still pending: prepared with both, taken after one is measured
    other, s = (_ask_prepared(client, exp) for _ in range(2))
    _tell(client, exp, [s])
    ahead = _counter(client, "beamsteer_suggestions_ahead_total")
    (nxt,) = _ask(client, exp, 1)
    assert _counter(client, "beamsteer_suggestions_ahead_total") == ahead + 1
    assert nxt["position"] != other["position"]


def test_a_loop_that_tells_at_once_gets_nothing_prepared(client: httpx.Client) -> None:
    """Telling right after the ask leaves no time to prepare in: a second thread would only
    slow the asks down."""
    exp = _fitted_experiment(client, "integrated_variance")
    prepared = _counter(client, "beamsteer_asks_prepared_total")
    for _ in range(4):
        _tell(client, exp, _ask(client, exp, 4))
    time.sleep(0.5)
    assert _counter(client, "beamsteer_asks_prepared_total") == prepared
    assert client.get(_url(exp)).json()["n_measurements"] == 46
