"""Asks and tells over HTTP: pending suggestions, idempotent measurements, bad input."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import SPEC


def _url(exp: dict, tail: str = "") -> str:
    return f"/api/v1/experiments/{exp['id']}{tail}"


def _measure(client: httpx.Client, exp: dict, items: list[dict]) -> httpx.Response:
    return client.post(_url(exp, "/measurements"), json={"measurements": items})


def _f(x: float, y: float) -> float:
    return float((x - 3) ** 2 / 10 + (y + 1) ** 2 / 5)


def _wait_fitted(client: httpx.Client, exp: dict) -> None:
    """The first fit runs in the background; asks meanwhile use the initial design."""
    deadline = time.monotonic() + 60
    while not client.get(_url(exp)).json()["model"]["outputs"]["intensity"]["fitted_n"]:
        assert time.monotonic() < deadline, "no fit within 60 s"
        time.sleep(0.05)


def _count(client: httpx.Client, exp: dict) -> int:
    return int(client.get(_url(exp)).json()["n_measurements"])


def test_suggestions_are_pending_and_distinct(client: httpx.Client, experiment: dict) -> None:
    r = client.post(_url(experiment, "/suggestions"), json={"n": 4})
    assert r.status_code == 201, r.text
    first = r.json()["suggestions"]
    assert len(first) == 4
    for s in first:
        assert set(s) >= {"id", "position", "mean", "std", "acquisition"}
        assert 0 <= s["position"]["x"] <= 10 and -5 <= s["position"]["y"] <= 5
        assert s["status"] == "pending"
    second = client.post(_url(experiment, "/suggestions"), json={"n": 4}).json()["suggestions"]
    spots = {(s["position"]["x"], s["position"]["y"]) for s in first + second}
    assert len(spots) == 8
    pending = client.get(_url(experiment, "/suggestions"), params={"status": "pending"})
    assert {s["id"] for s in pending.json()["suggestions"]} == {s["id"] for s in first + second}


def test_the_model_reports_its_map_error(client: httpx.Client, experiment: dict) -> None:
    """What a scientist reads to decide when a map is good enough (engine tests check the
    number itself)."""
    told = []
    for _ in range(3):
        batch = client.post(_url(experiment, "/suggestions"), json={"n": 3}).json()["suggestions"]
        told += [_f(**s["position"]) for s in batch]
        _measure(client, experiment, [
            {"position": s["position"], "values": {"intensity": _f(**s["position"])},
             "suggestion_id": s["id"]} for s in batch])
    deadline = time.monotonic() + 60  # relative is to the range the last fit saw: all 9
    while (out := client.get(_url(experiment)).json()["model"]["outputs"]["intensity"]
           )["fitted_n"] < 9:
        assert time.monotonic() < deadline, "no fit on all 9 points within 60 s"
        time.sleep(0.05)
    err = out["map_error"]
    assert err["n"] == out["n"] == 9
    assert err["measured_range"] == pytest.approx(max(told) - min(told))
    assert err["rms_std"] > 0
    assert err["relative"] == pytest.approx(err["rms_std"] / err["measured_range"])
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "relative" in schema["MapErrorPublic"]["properties"]


def test_suggestions_after_the_model_takes_over(client: httpx.Client, experiment: dict) -> None:
    for _ in range(3):
        batch = client.post(_url(experiment, "/suggestions"), json={"n": 3}).json()["suggestions"]
        _measure(client, experiment, [
            {"position": s["position"], "values": {"intensity": _f(**s["position"])},
             "suggestion_id": s["id"]} for s in batch])
    _wait_fitted(client, experiment)
    first = client.post(_url(experiment, "/suggestions"), json={"n": 3}).json()["suggestions"]
    second = client.post(_url(experiment, "/suggestions"), json={"n": 3}).json()["suggestions"]
    assert all(s["source"] != "initial_design" for s in first + second)
    assert all("intensity" in s["mean"] and s["std"]["intensity"] >= 0 for s in first)
    a = {(s["position"]["x"], s["position"]["y"]) for s in first}
    b = {(s["position"]["x"], s["position"]["y"]) for s in second}
    assert not a & b
    # the measured suggestions were closed as measured
    measured = client.get(_url(experiment, "/suggestions"), params={"status": "measured"})
    assert len(measured.json()["suggestions"]) == 9


def test_forbidden_regions_are_never_suggested(client: httpx.Client) -> None:
    spec = {**SPEC, "forbidden": [{"x": [0, 5]}], "initial_design": 3}
    exp = client.post("/api/v1/experiments", json=spec).json()
    for _ in range(5):
        batch = client.post(_url(exp, "/suggestions"), json={"n": 2}).json()["suggestions"]
        assert all(s["position"]["x"] > 5 for s in batch), batch
        _measure(client, exp, [{"position": s["position"], "values": {"intensity": 1.0 + i},
                                "suggestion_id": s["id"]} for i, s in enumerate(batch)])
    r = _measure(client, exp, [{"position": {"x": 1, "y": 0}, "values": {"intensity": 1}}])
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "measurements", 0, "position"]


def test_abandon_and_expire(client: httpx.Client) -> None:
    exp = client.post("/api/v1/experiments", json={**SPEC, "suggestion_ttl_s": 0.3}).json()
    s = client.post(_url(exp, "/suggestions"), json={"n": 2}).json()["suggestions"]
    r = client.delete(_url(exp, f"/suggestions/{s[0]['id']}"))
    assert r.status_code == 200 and r.json()["status"] == "abandoned"
    assert client.delete(_url(exp, "/suggestions/nope")).status_code == 404
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = {x["id"]: x["status"] for x in
              client.get(_url(exp, "/suggestions")).json()["suggestions"]}
        if st[s[1]["id"]] == "expired":
            break
        time.sleep(0.1)
    assert st == {s[0]["id"]: "abandoned", s[1]["id"]: "expired"}


def test_measurement_roundtrip_and_idempotency(client: httpx.Client, experiment: dict) -> None:
    item = {"position": {"x": 1.5, "y": -2}, "values": {"intensity": 3.25},
            "noise": {"intensity": 0.01}, "key": "scan-17-pt-1", "metadata": {"uid": "abc"}}
    r = _measure(client, experiment, [item])
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["created"] == [True]
    m = first["measurements"][0]
    assert m["seq"] == 1 and m["values"] == {"intensity": 3.25} and m["metadata"] == {"uid": "abc"}
    again = _measure(client, experiment, [item, {**item, "key": "scan-17-pt-2"}]).json()
    assert again["created"] == [False, True]
    assert again["measurements"][0] == m
    assert _count(client, experiment) == 2
    page = client.get(_url(experiment, "/measurements"), params={"limit": 1}).json()
    assert [x["seq"] for x in page["measurements"]] == [1] and page["next_after"] == 1
    page2 = client.get(_url(experiment, "/measurements"), params={"after": 1}).json()
    assert [x["seq"] for x in page2["measurements"]] == [2] and page2["next_after"] is None
    csv = client.get(_url(experiment, "/measurements"), params={"format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("seq,x,y,intensity,intensity_noise")
    assert lines[1].startswith("1,1.5,-2.0,3.25,0.01")


def test_a_suggestion_is_answered_once(client: httpx.Client, experiment: dict) -> None:
    """A tell repeated without a key (a retry after a lost reply) would store the point
    twice: 409, naming the measurement that answered it; a key replays as before."""
    (s,) = client.post(_url(experiment, "/suggestions"), json={"n": 1}).json()["suggestions"]
    item = {"position": s["position"], "values": {"intensity": 1.0}, "suggestion_id": s["id"]}
    assert _measure(client, experiment, [{**item, "key": "k1"}]).status_code == 201
    assert _measure(client, experiment, [{**item, "key": "k1"}]).json()["created"] == [False]
    for retry in ([item], [{**item, "key": "k2"}]):
        r = _measure(client, experiment, retry)
        assert r.status_code == 409, r.text
        d = r.json()["detail"][0]
        assert d["loc"] == ["body", "measurements", 0, "suggestion_id"]
        assert "already answered by measurement seq 1" in d["msg"]
    # twice in one batch: the second names the first; nothing of the batch is stored
    (t,) = client.post(_url(experiment, "/suggestions"), json={"n": 1}).json()["suggestions"]
    twice = {"position": t["position"], "values": {"intensity": 2.0}, "suggestion_id": t["id"]}
    r = _measure(client, experiment, [twice, {"position": {"x": 1, "y": 1},
                                              "values": {"intensity": 0.0}}, twice])
    assert r.status_code == 409 and "measurements[0] of this batch" in r.text, r.text
    assert r.json()["detail"][0]["loc"][-3:] == ["measurements", 2, "suggestion_id"]
    assert _count(client, experiment) == 1
    # a repeat measurement at the same place is welcome without the suggestion's id
    r = _measure(client, experiment, [{"position": s["position"], "values": {"intensity": 1.1}}])
    assert r.status_code == 201 and _count(client, experiment) == 2


def test_unsuggested_positions_are_welcome(client: httpx.Client, experiment: dict) -> None:
    raster = [{"position": {"x": x, "y": y}, "values": {"intensity": _f(x, y)}}
              for x in (0, 5, 10) for y in (-5, 0, 5)]
    r = _measure(client, experiment, raster)
    assert r.status_code == 201 and all(r.json()["created"])
    assert _count(client, experiment) == 9


BAD_MEASUREMENTS = [
    ({"position": {"x": 1}, "values": {"intensity": 1}}, ["position", "y"], "missing"),
    ({"position": {"x": 1, "y": 1, "z": 0}, "values": {"intensity": 1}}, ["position", "z"], None),
    ({"position": {"x": 11, "y": 1}, "values": {"intensity": 1}}, ["position", "x"], "outside"),
    ({"position": {"x": 1, "y": 1}, "values": {"flux": 1}}, ["values", "flux"], "unknown"),
    ({"position": {"x": 1, "y": 1}, "values": {}}, ["values"], None),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1},
      "noise": {"intensity": -1}}, ["noise", "intensity"], None),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": "high"}}, ["values", "intensity"],
     None),
    # a number is a JSON number: not read out of a string or a boolean
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": "1.5"}}, ["values", "intensity"],
     "number"),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": True}}, ["values", "intensity"],
     "number"),
    ({"position": {"x": "1", "y": 1}, "values": {"intensity": 1}}, ["position", "x"], "number"),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1e200}}, ["values", "intensity"],
     "smaller than"),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1}, "extra": 1}, ["extra"], None),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1}, "suggestion_id": "nope"},
     ["suggestion_id"], None),
    # text PostgreSQL cannot store (SQLite could): refused the same on both backends
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1}, "key": "run\x00 7"},
     ["key"], "NUL"),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1}, "suggestion_id": "s\x00"},
     ["suggestion_id"], "NUL"),
    ({"position": {"x": 1, "y": 1}, "values": {"intensity": 1},
      "metadata": {"sample": {"name": "film\x00"}}}, ["metadata"], "sample.name"),
]


@pytest.mark.parametrize(("item", "loc", "word"), BAD_MEASUREMENTS)
def test_bad_measurement_names_field_and_stores_nothing(
        client: httpx.Client, experiment: dict, item: dict, loc: list, word: str | None) -> None:
    good = {"position": {"x": 2, "y": 2}, "values": {"intensity": 1.0}}
    r = _measure(client, experiment, [good, item])
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"][:2] == ["body", "measurements"]
    assert d["loc"][-len(loc):] == loc, d
    if word:
        assert word in d["msg"]
    assert _count(client, experiment) == 0


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_refused(client: httpx.Client, experiment: dict, bad: str) -> None:
    body = '{"measurements": [{"position": {"x": 1, "y": 1}, "values": {"intensity": ' + \
        bad + "}}]}"
    r = client.post(_url(experiment, "/measurements"), content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-2:] == ["values", "intensity"]
    assert _count(client, experiment) == 0


@pytest.mark.parametrize("bad", ["NaN", "Infinity"])
def test_non_finite_metadata_is_refused(client: httpx.Client, experiment: dict,
                                        bad: str) -> None:
    """Python's JSON parser takes NaN; the store's JSON cannot hold it (was a 500)."""
    body = ('{"measurements": [{"position": {"x": 1, "y": 1}, "values": {"intensity": 1}, '
            '"metadata": {"temperature": [290, ' + bad + ']}}]}')
    r = client.post(_url(experiment, "/measurements"), content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"][-1] == "metadata" and "temperature[1]" in d["msg"], d
    assert _count(client, experiment) == 0
    r = client.post("/api/v1/experiments", content=(
        '{"name": "m", "parameters": [{"name": "x", "lower": 0, "upper": 1}], '
        '"outputs": [{"name": "i"}], "metadata": {"t": ' + bad + '}}'),
        headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "metadata"]


def test_a_nul_in_an_id_names_nothing(client: httpx.Client, experiment: dict) -> None:
    """404, as for any unknown id (PostgreSQL refused the query: it was a 500 there)."""
    r = client.get("/api/v1/experiments/ab%00cd")
    assert r.status_code == 404, r.text
    assert r.json()["detail"][0]["loc"] == ["path", "experiment_id"]
    r = client.delete(_url(experiment, "/suggestions/s%00"))
    assert r.status_code == 404, r.text
    assert "unknown suggestion" in r.json()["detail"][0]["msg"]
    r = client.post("/api/v1/experiments", json={**SPEC, "name": "film\x00"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]


def test_limits(client: httpx.Client, live_server, experiment: dict) -> None:  # noqa: ANN001
    r = client.post(_url(experiment, "/suggestions"), json={"n": 1000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "n"]
    r = client.post(_url(experiment, "/suggestions"), json={"n": "3"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "n"]
    r = client.post(_url(experiment, "/suggestions"), json={"n": 2.0})  # a JSON number
    assert r.status_code == 201 and len(r.json()["suggestions"]) == 2
    r = client.post(_url(experiment, "/suggestions"), params={"n": 2})  # curl's way
    assert r.status_code == 201 and len(r.json()["suggestions"]) == 2
    r = client.post(_url(experiment, "/suggestions"), params={"n": 2}, json={"n": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "n"]
    r = client.post(_url(experiment, "/suggestions"), params={"n": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "n"]
    too_many = [{"position": {"x": 1, "y": 1}, "values": {"intensity": 1}}] * (
        live_server.settings.max_batch_measurements + 1)
    r = _measure(client, experiment, too_many)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "measurements"]
    huge = b"x" * (live_server.settings.max_body_bytes + 10)
    r = client.post(_url(experiment, "/measurements"), content=huge,
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _count(client, experiment) == 0


def test_posterior_points_and_grid(client: httpx.Client, experiment: dict) -> None:
    empty = client.post(_url(experiment, "/posterior"), json={"points": [[1, 1]]}).json()
    assert empty["outputs"]["intensity"]["mean"] == [None]
    raster = [{"position": {"x": x, "y": y}, "values": {"intensity": _f(x, y)}}
              for x in (0, 2.5, 5, 7.5, 10) for y in (-5, -2.5, 0, 2.5, 5)]
    _measure(client, experiment, raster)
    _wait_fitted(client, experiment)
    r = client.post(_url(experiment, "/posterior"), json={"points": [[5, 0], [3, -1]]})
    assert r.status_code == 200, r.text
    post = r.json()["outputs"]["intensity"]
    assert abs(post["mean"][0] - _f(5, 0)) < 0.3 and abs(post["mean"][1] - _f(3, -1)) < 0.3
    g = client.post(_url(experiment, "/posterior"), json={"grid": {"x": 7, "y": 5}}).json()
    assert g["axes"]["x"][0] == 0 and g["axes"]["x"][-1] == 10 and len(g["points"]) == 35
    assert len(g["outputs"]["intensity"]["std"]) == 35
    assert client.get(_url(experiment, "/posterior"), params={"n": 10}).status_code == 200
    for body, loc in [({"points": [[1, 2, 3]]}, ["body", "points"]),
                      ({"points": [[11, 0]]}, ["body", "points", 0, 0]),
                      ({"points": [[1e16, 0, 3], [0.5, 1]]}, ["body", "points"]),  # ragged
                      ({"grid": {"q": 5}}, ["body", "grid", "q"]),
                      ({"grid": {"x": 1}}, ["body", "grid", "x"]),
                      ({}, ["body", "points"])]:
        r = client.post(_url(experiment, "/posterior"), json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (body, r.text)
