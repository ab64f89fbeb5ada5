"""The dashboard in a real headless Chromium: loads clean and local, follows an experiment
live, creates one from the form, and leaves a screenshot to look at."""

from __future__ import annotations

import math
import re
import time

import httpx
import pytest

from tests.api.conftest import LiveServer
from tests.dashboard.conftest import ARTIFACTS, Page

SPEC = {
    "name": "gradient-film",
    "parameters": [{"name": "x", "lower": 0, "upper": 10, "units": "mm", "speed": 2},
                   {"name": "y", "lower": -5, "upper": 5, "units": "mm", "speed": 1}],
    "outputs": [{"name": "intensity", "units": "counts"}],
    "goal": "map",
    "forbidden": [{"x": [4, 5], "y": [-5, -3]}],
}


def sample(p: dict[str, float]) -> float:
    """A film with a composition gradient and one bright phase: smooth, a few length scales."""
    x, y = p["x"], p.get("y", 0.0)
    return (100 + 40 * math.sin(0.6 * x) * math.cos(0.4 * y)
            + 80 * math.exp(-((x - 7) ** 2 + (y - 2) ** 2) / 3))


def create(api: httpx.Client, spec: dict) -> str:
    r = api.post("/api/v1/experiments", json=spec)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def run(api: httpx.Client, eid: str, rounds: int, q: int = 4, ask: bool = True) -> list[dict]:
    """Ask and tell ``rounds`` batches of ``q``, then ask once more (left pending)."""
    for _ in range(rounds):
        sugg = api.post(f"/api/v1/experiments/{eid}/suggestions", json={"n": q}).json()
        tell = [{"position": s["position"], "values": {"intensity": sample(s["position"])},
                 "suggestion_id": s["id"]} for s in sugg["suggestions"]]
        r = api.post(f"/api/v1/experiments/{eid}/measurements", json={"measurements": tell})
        assert r.status_code == 201, r.text
    if not ask:
        return []
    return api.post(f"/api/v1/experiments/{eid}/suggestions", json={"n": q}).json()["suggestions"]


def map_points(page: Page) -> int:
    return int(page.page.evaluate(
        "() => document.querySelector('[data-testid=map]').data[0].x.length"))


def test_page_loads_clean_local_and_read_only(page: Page, api: httpx.Client) -> None:
    eid = create(api, SPEC)
    run(api, eid, rounds=2)
    p = page.page
    p.goto(page.url + "/")
    p.locator(f"a[href='#/e/{eid}']").wait_for(timeout=10_000)
    assert p.locator("#health").inner_text().startswith("service ok")
    p.locator(f"a[href='#/e/{eid}']").click()
    p.wait_for_function("() => document.querySelector('[data-ref=live]').textContent === 'live'")
    p.wait_for_function("() => (document.querySelector('[data-ref=mean]').data || []).length > 0")
    assert p.locator("[data-testid=n-measurements]").inner_text() == "8"
    origins = {u.split("/")[2] for _, u in page.rec.requests}
    assert origins == {page.url.split("/")[2]}, origins
    assert any(u.endswith("plotly-cartesian.min.js") for _, u in page.rec.requests)
    assert page.rec.websockets and all("/events" in u for u in page.rec.websockets)
    assert page.rec.writes() == [], "viewing must not write"


def test_measurement_posted_through_api_shows_up_live(page: Page, api: httpx.Client) -> None:
    eid = create(api, SPEC)
    pending = run(api, eid, rounds=3)
    p = page.page
    p.goto(f"{page.url}/#/e/{eid}")
    p.wait_for_function("() => document.querySelector('[data-ref=live]').textContent === 'live'")
    count = p.locator("[data-testid=n-measurements]")
    p.wait_for_function("() => document.querySelector('[data-testid=n-measurements]')"
                        ".textContent === '12'", timeout=10_000)
    assert map_points(page) == 12
    n_requests = len(page.rec.requests)

    s = pending[0]
    t0 = time.monotonic()
    r = api.post(f"/api/v1/experiments/{eid}/measurements", json={"measurements": [
        {"position": s["position"], "values": {"intensity": sample(s["position"])},
         "suggestion_id": s["id"]}]})
    assert r.status_code == 201
    p.wait_for_function("() => document.querySelector('[data-testid=n-measurements]')"
                        ".textContent === '13'", timeout=2_000)
    assert time.monotonic() - t0 < 2.0
    assert count.inner_text() == "13" and map_points(page) == 13
    # the measured suggestion is no longer drawn as pending
    assert p.evaluate("() => document.querySelector('[data-testid=map]').data[2].x.length") == 3
    # no reload: the page's own document and scripts were not requested again
    later = [u for _, u in page.rec.requests[n_requests:]]
    assert not any(u.endswith((".html", ".js", "/")) for u in later), later


def test_create_experiment_through_the_form(page: Page, api: httpx.Client) -> None:
    p = page.page
    p.goto(page.url + "/")
    form = p.locator("form[name=create]")
    form.locator("input[name=name]").fill("form-made")
    form.locator("select[name=goal]").select_option("maximize")
    form.locator("[data-ref=add-parameter]").click()
    row = form.locator("tr.param").nth(2)
    row.locator("input[name=p-name]").fill("T")
    row.locator("input[name=p-lower]").fill("20")
    row.locator("input[name=p-upper]").fill("300")
    row.locator("input[name=p-units]").fill("K")
    form.locator("input[name=batch_size]").fill("3")
    form.locator("button[type=submit]").click()
    p.wait_for_url("**/#/e/*", timeout=10_000)
    eid = p.url.rsplit("/", 1)[1]
    exp = api.get(f"/api/v1/experiments/{eid}").json()
    assert exp["spec"]["name"] == "form-made" and exp["spec"]["goal"] == "maximize"
    assert [q["name"] for q in exp["spec"]["parameters"]] == ["x", "y", "T"]
    assert exp["spec"]["parameters"][2]["units"] == "K" and exp["spec"]["batch_size"] == 3
    # the new experiment's view: three parameters, so axis pickers and a slice slider
    p.locator("[data-ref=name]").filter(has_text="form-made").wait_for()
    assert p.locator("select[name='x axis']").count() == 1
    assert p.locator("input[name=at-T]").count() == 1
    # a bad spec is refused with the field named, and nothing is created
    p.goto(page.url + "/")
    form.locator("input[name=name]").fill("bad")
    form.locator("tr.param").nth(0).locator("input[name=p-upper]").fill("-1")
    n_before = len(api.get("/api/v1/experiments").json()["experiments"])
    form.locator("button[type=submit]").click()
    err = form.locator("[data-ref=form-error]")
    err.wait_for()
    assert "parameters" in err.inner_text()
    assert len(api.get("/api/v1/experiments").json()["experiments"]) == n_before
    page.rec.errors[:] = [e for e in page.rec.errors if "422" not in e]  # the refused POST


def test_screenshot_of_an_experiment_view(page: Page, api: httpx.Client,
                                          server: LiveServer) -> None:
    """The page watches a run of 36 measurements as it happens, then is photographed."""
    eid = create(api, SPEC)
    p = page.page
    p.goto(f"{page.url}/#/e/{eid}")
    p.wait_for_function("() => document.querySelector('[data-ref=live]').textContent === 'live'")
    for _ in range(8):
        run(api, eid, rounds=1, ask=False)
        p.wait_for_timeout(400)  # as a beamline would: moving the motors takes a while
    server.service.wait_for_refits()
    run(api, eid, rounds=1)  # a refit on all the data, and the next batch left pending
    server.service.wait_for_refits()
    p.wait_for_function("() => document.querySelector('[data-testid=n-measurements]')"
                        ".textContent === '36'", timeout=10_000)
    p.wait_for_function("() => (document.querySelector('[data-ref=acq]').data || []).length > 0")
    # the refresh after the last refit has recorded N = 36 on the convergence plot, with the
    # server's map error estimate beside the grid's std
    p.wait_for_function("() => document.querySelector('[data-ref=conv]').data[0].x.at(-1) === 36")
    err = api.get(f"/api/v1/experiments/{eid}").json()["model"]["outputs"]["intensity"][
        "map_error"]  # the refits are done: the settled model's
    assert err["n"] == 36
    # (a refresh on the measurements may have drawn the model before its refit first)
    p.wait_for_function("v => { const d = document.querySelector('[data-ref=conv]').data[2];"
                        " return d.x.at(-1) === 36 && d.y.at(-1) === v; }", arg=err["rms_std"])
    cell = p.locator("[data-testid=map-error-intensity]").inner_text()
    shown = re.fullmatch(r"(\S+) counts \((\S+)% of range\)", cell)  # 3 and 2 digits
    assert shown is not None, cell
    assert float(shown[1]) == pytest.approx(err["rms_std"], rel=5e-3)
    assert float(shown[2]) == pytest.approx(100 * err["relative"], rel=5e-2)
    p.wait_for_timeout(300)  # let Plotly finish drawing
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "experiment.png"
    p.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def test_a_page_opened_late_shows_the_whole_map_error_curve(page: Page, api: httpx.Client,
                                                            server: LiveServer) -> None:
    """The measurements were all taken before the page was opened (in a fresh browser, with
    nothing in its storage): the convergence plot's map error series is the server's
    history, one point per refit, not a single point at the current N."""
    eid = create(api, SPEC)
    for _ in range(5):  # a refit after each batch of 4: at N = 4, 8, 12, 16, 20
        run(api, eid, rounds=1, ask=False)
        server.service.wait_for_refits()
    exp = api.get(f"/api/v1/experiments/{eid}").json()
    history = [(m["n"], m["rms_std"]) for m in exp["map_error_history"]]
    assert [n for n, _ in history] == [4, 8, 12, 16, 20]
    p = page.page
    p.goto(f"{page.url}/#/e/{eid}")
    p.wait_for_function("() => (document.querySelector('[data-ref=conv]').data || [])"
                        ".length > 2 && document.querySelector('[data-ref=conv]')"
                        ".data[2].x.length > 1", timeout=10_000)
    series = p.evaluate("() => { const d = document.querySelector('[data-ref=conv]').data[2];"
                        " return { name: d.name, x: Array.from(d.x), y: Array.from(d.y) }; }")
    assert series["name"].startswith("map error estimate")
    assert list(zip(series["x"], series["y"], strict=True)) == history
    # and it goes on live: the next refit's point joins the curve
    run(api, eid, rounds=1, ask=False)
    server.service.wait_for_refits()
    p.wait_for_function("() => document.querySelector('[data-ref=conv]').data[2].x.join()"
                        " === '4,8,12,16,20,24'", timeout=10_000)


def test_create_form_offers_every_choice_the_api_takes(page: Page, api: httpx.Client) -> None:
    """The form's goal, acquisition and kernel menus list exactly the values of the API's
    schema (plus "default" for the acquisition), so a new option cannot be forgotten."""
    p = page.page
    p.goto(page.url + "/")
    schema = api.get("/openapi.json").json()["components"]["schemas"]
    spec = next(v for k, v in schema.items() if "acquisition" in v.get("properties", {})
                and "goal" in v.get("properties", {}))

    def enum(field: str) -> set[str]:
        prop = spec["properties"][field]
        options = [prop, *prop.get("anyOf", []), *prop.get("allOf", [])]
        for o in options:
            if "$ref" in o:
                o = schema[o["$ref"].rsplit("/", 1)[-1]]
            if "enum" in o:
                return set(o["enum"])
        raise AssertionError(f"no enum for {field}: {prop}")

    for field in ("goal", "acquisition", "kernel"):
        shown = set(p.locator(f"form[name=create] select[name={field}] option")
                    .evaluate_all("os => os.map((o) => o.value)")) - {""}
        assert shown == enum(field), field
