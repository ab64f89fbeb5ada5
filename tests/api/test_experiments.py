"""Creating and reading experiments over HTTP; bad specs are refused by field."""

from __future__ import annotations

import copy

import httpx
import pytest

from tests.api.conftest import SPEC


def test_create_fills_defaults(client: httpx.Client) -> None:
    r = client.post("/api/v1/experiments", json=SPEC)
    assert r.status_code == 201
    body = r.json()
    assert body["id"] and body["status"] == "active"
    spec = body["spec"]
    assert spec["acquisition"] == "misfit_variance"  # follows goal=map
    assert spec["kernel"] == "matern32"  # follows goal=map
    assert spec["target"] == "intensity"
    assert spec["batch_size"] == 1
    assert spec["initial_design"] == 4
    assert spec["parameters"][0] == {"name": "x", "lower": 0.0, "upper": 10.0, "units": "mm",
                                     "speed": None}
    assert body["n_measurements"] == 0 and body["n_pending"] == 0


def test_goal_sets_default_acquisition(client: httpx.Client) -> None:
    r = client.post("/api/v1/experiments", json={**SPEC, "goal": "maximize"})
    assert r.json()["spec"]["acquisition"] == "ei"
    assert r.json()["spec"]["kernel"] == "matern52"


def test_explicit_kernel_is_kept(client: httpx.Client) -> None:
    r = client.post("/api/v1/experiments", json={**SPEC, "kernel": "matern52"})
    assert r.json()["spec"]["kernel"] == "matern52"


def test_get_and_list(client: httpx.Client, experiment: dict) -> None:
    r = client.get(f"/api/v1/experiments/{experiment['id']}")
    assert r.status_code == 200
    body = r.json()
    assert body["spec"] == experiment["spec"]
    assert body["model"]["n"] == 0
    ids = [e["id"] for e in client.get("/api/v1/experiments").json()["experiments"]]
    assert experiment["id"] in ids


def test_unknown_experiment_is_404(client: httpx.Client) -> None:
    for method, path in [("GET", ""), ("POST", "/suggestions"), ("GET", "/measurements"),
                         ("POST", "/measurements"), ("GET", "/suggestions")]:
        kw = {"json": {"measurements": [{"position": {"x": 1}, "values": {"i": 1}}]}} \
            if method == "POST" and "measure" in path else {}
        r = client.request(method, f"/api/v1/experiments/nope{path}", **kw)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"][0]["loc"] == ["path", "experiment_id"]


def _bad(mutate) -> dict:  # noqa: ANN001
    spec = copy.deepcopy(SPEC)
    mutate(spec)
    return spec


BAD_SPECS = [
    (lambda s: s["parameters"][0].update(lower=20), ["body", "parameters", 0, "upper"]),
    (lambda s: s["parameters"].append({"name": "x", "lower": 0, "upper": 1}),
     ["body", "parameters", 2, "name"]),
    (lambda s: s.update(goal="explore"), ["body", "goal"]),
    (lambda s: s.update(acquisition="magic"), ["body", "acquisition"]),
    (lambda s: s.update(target="nope"), ["body", "target"]),
    (lambda s: s.update(batch_size=0), ["body", "batch_size"]),
    (lambda s: s.update(forbidden=[{"z": [0, 1]}]), ["body", "forbidden", 0, "z"]),
    (lambda s: s.update(forbidden=[{"x": [3, 1]}]), ["body", "forbidden", 0, "x"]),
    (lambda s: s.update(forbidden=[{"x": [-1, 11]}]), ["body", "forbidden", 0]),
    (lambda s: s.update(outputs=[]), ["body", "outputs"]),
    (lambda s: s.update(parameters=[]), ["body", "parameters"]),
    (lambda s: s["parameters"][1].update(name="bad name!"), ["body", "parameters", 1, "name"]),
    (lambda s: s.update(colour="red"), ["body", "colour"]),
    (lambda s: s["parameters"][0].update(speed=-1), ["body", "parameters", 0, "speed"]),
    # parameters and outputs share the measurements table's columns
    (lambda s: s["outputs"][0].update(name=s["parameters"][0]["name"]),
     ["body", "outputs", 0, "name"]),
    (lambda s: s["parameters"][0].update(name="seq"), ["body", "parameters", 0, "name"]),
    (lambda s: s["parameters"][1].update(name=s["outputs"][0]["name"] + "_noise"),
     ["body", "parameters", 1, "name"]),
]


@pytest.mark.parametrize(("mutate", "loc"), BAD_SPECS)
def test_bad_spec_names_field(client: httpx.Client, mutate, loc: list) -> None:  # noqa: ANN001
    before = len(client.get("/api/v1/experiments").json()["experiments"])
    r = client.post("/api/v1/experiments", json=_bad(mutate))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"][: len(loc)] == loc, detail
    assert detail[0]["msg"]
    assert len(client.get("/api/v1/experiments").json()["experiments"]) == before


def test_not_json_is_422(client: httpx.Client) -> None:
    r = client.post("/api/v1/experiments", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_pause_resume_close(client: httpx.Client, experiment: dict) -> None:
    url = f"/api/v1/experiments/{experiment['id']}"
    client.post(f"{url}/suggestions", json={"n": 2})
    assert client.patch(url, json={"status": "paused"}).json()["status"] == "paused"
    r = client.post(f"{url}/suggestions", json={"n": 1})
    assert r.status_code == 409 and r.json()["detail"][0]["loc"] == ["status"]
    # a paused experiment still takes measurements
    m = {"measurements": [{"position": {"x": 1, "y": 1}, "values": {"intensity": 1.0}}]}
    assert client.post(f"{url}/measurements", json=m).status_code == 201
    assert client.patch(url, json={"status": "active"}).json()["status"] == "active"
    closed = client.patch(url, json={"status": "closed"}).json()
    assert closed["status"] == "closed" and closed["n_pending"] == 0
    assert client.post(f"{url}/measurements", json=m).status_code == 409
    assert client.patch(url, json={"status": "archived"}).status_code == 422
