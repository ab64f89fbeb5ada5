"""The service panel (models, readiness, queue depth, dead letters) and the thumbnails with
tags of measurements that carried detector images, in a real headless Chromium."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np

from tests.dashboard.conftest import ARTIFACTS, Page

SHIPPED = ("superres", "tagger")  # the embedded worker of the default settings serves both
SPEC = {
    "name": "ring-hunt",
    "parameters": [{"name": "x", "lower": 0, "upper": 10, "units": "mm"},
                   {"name": "y", "lower": 0, "upper": 5, "units": "mm"}],
    "outputs": [{"name": "ring_prob"}, {"name": "iq", "units": "counts"}],
    "goal": "maximize", "target": "ring_prob", "initial_design": 4,
    "reductions": {"ring_prob": {"model": "tagger", "output": "ring"},
                   "iq": {"q_min": 0.05, "q_max": 0.1, "q_per_pixel": 0.01}},
}


def wait_ready(api: httpx.Client, timeout: float = 60) -> None:
    t_end = time.monotonic() + timeout
    for m in SHIPPED:
        while api.get(f"/v2/models/{m}/ready").status_code != 200:
            assert time.monotonic() < t_end, f"model {m} never became ready"
            time.sleep(0.05)


def tell_image(api: httpx.Client, eid: str, position: dict[str, float], seed: int) -> dict:
    """One measurement with its detector image, as a multipart upload of the raw .npy."""
    yy, xx = np.mgrid[0:32, 0:32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    rate = 2.0 + 40.0 * np.exp(-((r - (3 + position["x"])) ** 2) / 2.0)
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).poisson(rate).astype(np.float32))
    resp = api.post(f"/api/v1/experiments/{eid}/measurements/image",
                    files={"file": ("frame.npy", buf.getvalue())},
                    data={"measurement": json.dumps({"position": position})})
    assert resp.status_code == 201, resp.text
    return resp.json()["measurements"][0]


def test_service_panel_shows_the_shipped_models_ready(page: Page, api: httpx.Client) -> None:
    wait_ready(api)
    p = page.page
    p.goto(page.url + "/")
    for m in SHIPPED:
        row = p.locator(f"[data-testid=models] tr[data-model={m}]")
        row.wait_for(timeout=10_000)
        assert row.get_attribute("data-ready") == "true"
        assert "ready" in row.inner_text()
        assert row.locator("[data-ref=depth]").inner_text() == "0"
        assert row.locator("[data-ref=dead]").inner_text() == "0"
    assert "2 of 2 models served" in p.locator("[data-ref=service-note]").inner_text()
    # /api/v1/models and /metrics were read through request() (no other route to them)
    paths = [u.split("?")[0].removeprefix(page.url) for _, u in page.rec.requests]
    assert "/api/v1/models" in paths and "/metrics" in paths


def test_image_measurements_show_thumbnails_and_tags(page: Page, api: httpx.Client) -> None:
    wait_ready(api)
    r = api.post("/api/v1/experiments", json=SPEC)
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    first = tell_image(api, eid, {"x": 2.0, "y": 1.0}, seed=0)
    assert first["metadata"]["thumbnail"].startswith("data:image/png;base64,")
    assert set(first["metadata"]["tags"]) >= {"ring"}
    p = page.page
    p.goto(f"{page.url}/#/e/{eid}")
    p.wait_for_function("() => document.querySelector('[data-ref=live]').textContent === 'live'")
    img = p.locator("img[data-testid=thumbnail]")
    img.first.wait_for(timeout=10_000)
    assert img.first.get_attribute("src") == first["metadata"]["thumbnail"]
    natural = "() => document.querySelector('img[data-testid=thumbnail]').naturalWidth"
    assert p.evaluate(natural) == 32  # a 32 px image stays 32 px (binned only when larger)
    tagged = p.locator("table.measurements tbody tr").first.locator(".tag")
    assert tagged.count() >= 1
    # a second image told while the page is open shows up live, with its thumbnail
    for i, pos in enumerate([{"x": 6.0, "y": 4.0}, {"x": 8.5, "y": 2.5}], start=1):
        tell_image(api, eid, pos, seed=i)
    p.wait_for_function(
        "() => document.querySelectorAll('img[data-testid=thumbnail]').length === 3",
        timeout=5_000)
    csv = api.get(f"/api/v1/experiments/{eid}/measurements?format=csv").text
    assert "data:image" not in csv and "sha256" in csv  # the CSV leaves thumbnails out
    ARTIFACTS.mkdir(exist_ok=True)
    p.screenshot(path=str(ARTIFACTS / "image-measurements.png"), full_page=True)
    # hovering a measured point on the map shows its thumbnail
    xy = p.evaluate("""() => {
      const gd = document.querySelector('[data-testid=map]');
      const r = gd.getBoundingClientRect(), fl = gd._fullLayout;
      return [r.left + fl.xaxis._offset + fl.xaxis.l2p(2.0),
              r.top + fl.yaxis._offset + fl.yaxis.l2p(1.0)];
    }""")
    p.mouse.move(xy[0], xy[1])
    box = p.locator("[data-testid=map-thumb]")
    box.wait_for(state="visible", timeout=5_000)
    assert box.locator("img").get_attribute("src") == first["metadata"]["thumbnail"]
