"""Several outputs (one steers), per-measurement noise, and parallel asks."""

from __future__ import annotations

import threading
import time

import httpx

from tests.api.conftest import LiveServer

SPEC2 = {
    "name": "two-detectors",
    "parameters": [{"name": "x", "lower": 0, "upper": 1}, {"name": "T", "lower": 20, "upper": 80,
                                                           "units": "degC"}],
    "outputs": [{"name": "peak_area"}, {"name": "fwhm", "units": "1/nm"}],
    "target": "fwhm", "goal": "maximize", "acquisition": "ucb", "initial_design": 4,
}


def _wait_fitted(c: httpx.Client, url: str, output: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        model = c.get(url).json()["model"]
        if model["outputs"].get(output, {}).get("fitted_n"):
            return model
        assert time.monotonic() < deadline, model
        time.sleep(0.05)


def test_several_outputs_one_target(client: httpx.Client) -> None:
    exp = client.post("/api/v1/experiments", json=SPEC2).json()
    assert exp["spec"]["target"] == "fwhm" and exp["spec"]["acquisition"] == "ucb"
    url = f"/api/v1/experiments/{exp['id']}"
    items = []
    for i in range(12):
        x, t = (i % 4) / 3, 20 + 60 * (i // 4) / 2
        values = {"fwhm": 1 + x - ((t - 50) / 30) ** 2}
        if i % 3:  # the second detector missed some points
            values["peak_area"] = 10 * x + 0.1 * t
        items.append({"position": {"x": x, "T": t}, "values": values,
                      "noise": {"fwhm": 0.001 if i < 6 else 0.05}})
    r = client.post(f"{url}/measurements", json={"measurements": items})
    assert r.status_code == 201, r.text
    _wait_fitted(client, url, "fwhm")
    model = _wait_fitted(client, url, "peak_area")
    assert model["outputs"]["fwhm"]["n"] == 12 and model["outputs"]["peak_area"]["n"] == 8
    s = client.post(f"{url}/suggestions", json={"n": 2}).json()["suggestions"]
    assert all(set(x["mean"]) == {"fwhm", "peak_area"} for x in s)
    assert all(x["source"] == "ucb" and x["acquisition"] is not None for x in s)
    post = client.post(f"{url}/posterior", json={"points": [[0.5, 50]]}).json()["outputs"]
    assert abs(post["peak_area"]["mean"][0] - 10) < 1.5
    assert abs(post["fwhm"]["mean"][0] - 1.5) < 0.2


def test_parallel_asks_never_share_a_spot(live_server: LiveServer, client: httpx.Client,
                                          experiment: dict) -> None:
    url = f"/api/v1/experiments/{experiment['id']}"
    raster = [{"position": {"x": x, "y": y}, "values": {"intensity": x - y}}
              for x in (0, 5, 10) for y in (-5, 0, 5)]
    client.post(f"{url}/measurements", json={"measurements": raster})
    _wait_fitted(client, url, "intensity")
    got: list[dict] = []
    errors: list[str] = []

    def ask() -> None:
        with httpx.Client(base_url=live_server.url, timeout=60) as c:
            r = c.post(f"{url}/suggestions", json={"n": 2})
            if r.status_code != 201:
                errors.append(r.text)
            else:
                got.extend(r.json()["suggestions"])

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(got) == 12
    spots = {(round(s["position"]["x"], 6), round(s["position"]["y"], 6)) for s in got}
    assert len(spots) == 12


def test_measurements_during_a_refit_get_fitted(client: httpx.Client, experiment: dict) -> None:
    """Data told while a refit runs is fitted when it ends, with no further tell."""
    url = f"/api/v1/experiments/{experiment['id']}"

    def batch(xs: list[float]) -> list[dict]:
        return [{"position": {"x": x, "y": y}, "values": {"intensity": x * y}}
                for x in xs for y in (-4, 0, 4)]

    client.post(f"{url}/measurements", json={"measurements": batch([1, 5, 9])})
    # the first fit (9 points) has just started in the background; tell more meanwhile
    client.post(f"{url}/measurements", json={"measurements": batch([0, 2, 3, 4, 6, 7, 8, 10])})
    deadline = time.monotonic() + 60
    while client.get(url).json()["model"]["outputs"]["intensity"]["fitted_n"] < 33:
        assert time.monotonic() < deadline, "the refit stalled until the next tell"
        time.sleep(0.05)
