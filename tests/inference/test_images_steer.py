"""An experiment steered by detector images: the server reduces each posted image (the
tagger through the queue, a q-range integral in place), stores the values with the
measurement, and the GP steers on them."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest

from models import registry
from server.reductions import q_integral
from server.steering.spec import Reduction
from server.thumbnails import thumbnail_data_url

ROUNDS = 7
SPEC = {
    "name": "ring-hunt", "goal": "maximize", "target": "ring_prob", "initial_design": 4,
    "parameters": [{"name": "x", "lower": 0, "upper": 10, "units": "mm"}],
    "outputs": [{"name": "ring_prob"}, {"name": "iq"}],
    "reductions": {"ring_prob": {"model": "tagger", "output": "ring"},
                   "iq": {"q_min": 0.05, "q_max": 0.1, "q_per_pixel": 0.01}},
}


def detector_image(x: float, seed: int) -> np.ndarray:
    """A powder ring whose radius grows along the sample, on a Poisson background."""
    yy, xx = np.mgrid[0:32, 0:32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    rate = 2.0 + 40.0 * np.exp(-((r - (3 + x)) ** 2) / 2.0)
    return np.random.default_rng(seed).poisson(rate).astype(np.float32)


def _wait_fitted(client, url: str, n: int) -> None:
    t_end = time.monotonic() + 60
    while client.get(url).json()["model"]["outputs"]["ring_prob"]["fitted_n"] < n:
        assert time.monotonic() < t_end, "no fit"
        time.sleep(0.05)


def npy_b64(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, a)
    return base64.b64encode(buf.getvalue()).decode()


def test_posted_images_steer_a_short_autonomous_loop(client, tagger_checkpoint) -> None:
    exp = client.post("/api/v1/experiments", json=SPEC)
    assert exp.status_code == 201, exp.text
    assert exp.json()["spec"]["reductions"]["ring_prob"] == {
        "kind": "model", "model": "tagger", "output": "ring"}
    url = f"/api/v1/experiments/{exp.json()['id']}"
    tagger = registry.load(tagger_checkpoint)
    posted = []
    for i in range(ROUNDS):
        s = client.post(f"{url}/suggestions", json={"n": 1}).json()["suggestions"][0]
        image = detector_image(s["position"]["x"], seed=i)
        m = {"position": s["position"], "suggestion_id": s["id"], "key": f"frame-{i}"}
        if i == ROUNDS - 1:  # the last one as a multipart upload of the raw .npy
            buf = io.BytesIO()
            np.save(buf, image)
            r = client.post(f"{url}/measurements/image",
                            files={"file": ("frame.npy", buf.getvalue())},
                            data={"measurement": json.dumps(m)})
        else:
            r = client.post(f"{url}/measurements",
                            json={"measurements": [{**m, "image": npy_b64(image)}]})
        assert r.status_code == 201, r.text
        posted.append((image, r.json()["measurements"][0], s["source"]))
        if i == 3:  # the initial design is measured: let the GP fit before the next ask
            _wait_fitted(client, url, 3)

    stored = client.get(f"{url}/measurements").json()["measurements"]
    assert [m["key"] for m in stored] == [f"frame-{i}" for i in range(ROUNDS)]
    iq = Reduction(q_min=0.05, q_max=0.1, q_per_pixel=0.01)
    for (image, reply, _), m in zip(posted, stored, strict=True):
        assert reply["values"] == m["values"]  # what the reply said is what was stored
        assert m["values"]["ring_prob"] == pytest.approx(tagger.predict(image)["ring"],
                                                         abs=1e-5)
        assert m["values"]["iq"] == pytest.approx(q_integral(image, iq))
        assert m["metadata"]["image"]["shape"] == [32, 32]
        assert m["metadata"]["reductions"]["ring_prob"]["job_id"]
        assert m["metadata"]["tags"] == pytest.approx(tagger.predict(image), abs=1e-5)
        assert "tags" not in m["metadata"]["reductions"]["ring_prob"]
        assert m["metadata"]["thumbnail"] == thumbnail_data_url(image)
    sources = [src for _, _, src in posted]
    assert sources[:4] == ["initial_design"] * 4, sources
    assert "initial_design" not in sources[4:], sources  # the GP steered the rest
    model = client.get(url).json()["model"]
    assert model["n"] == ROUNDS


def test_image_errors_name_the_field(client) -> None:
    exp = client.post("/api/v1/experiments", json=SPEC).json()
    url = f"/api/v1/experiments/{exp['id']}/measurements"
    bad = client.post(url, json={"measurements": [{"position": {"x": 1}, "image": "!!"}]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "measurements", 0, "image"]
    blank = np.full((8, 8), np.nan, np.float32)
    r = client.post(url, json={"measurements": [{"position": {"x": 1},
                                                  "image": npy_b64(blank)}]})
    assert r.status_code == 422 and "no valid" in r.text, r.text
    plain = client.post("/api/v1/experiments", json={**SPEC, "reductions": {}}).json()
    r = client.post(f"/api/v1/experiments/{plain['id']}/measurements", json={
        "measurements": [{"position": {"x": 1}, "image": npy_b64(detector_image(1, 0))}]})
    assert r.status_code == 422 and "names no reductions" in r.text
    assert client.get(url).json()["measurements"] == []  # nothing half-stored
