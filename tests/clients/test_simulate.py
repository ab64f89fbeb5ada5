"""The simulated beamline: its physics and reductions offline, and a small closed loop
(steered, grid, random) against the live server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from clients import Client
from clients.simulate import Beamline, CurveReducer, GradientFilm, ImageDetector, compare
from clients.simulate.run import grid_positions
from server.reductions import q_integral
from server.steering.spec import Reduction
from tests.clients.conftest import LiveServer


def test_reductions_recover_the_truth() -> None:
    film = GradientFilm()
    bl = Beamline(film, seed=3)
    X = np.random.default_rng(0).uniform([0, -5], [10, 5], (40, 2))
    got = np.array([[v["q0"], v["width"]] for v in
                    bl.visit([{"x": x, "y": y} for x, y in X])])
    truth = film.truth(X)
    assert np.abs(got[:, 0] - truth["q0"]).max() < 0.02  # 1/nm; the map spans ~1
    assert np.abs(got[:, 1] - truth["width"]).max() < 0.01
    flat = CurveReducer(film.q).reduce(np.full(film.q.size, 7.0))  # no ring: no crash
    assert flat["area"] == pytest.approx(0.0, abs=1e-6)


def test_motors_move_together_and_count_travel() -> None:
    bl = Beamline(GradientFilm())  # x at 2 mm/s, y at 1 mm/s, both start at the lower end
    dt = bl.move({"x": 4.0, "y": -4.0})  # 2 s on x, 1 s on y: the slower one counts
    assert dt == pytest.approx(2.0 + 0.1)
    assert bl.move({"x": 4.0, "y": -4.0}) == 0.0
    assert bl.travel_s == pytest.approx(2.1)
    grid = grid_positions(GradientFilm(), 20)
    assert len(grid) == 20 and grid[4]["y"] == grid[5]["y"]  # 4 x 5, snake order


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_small_closed_loop(live_server: LiveServer) -> None:
    with Client(live_server.url) as c:
        report = compare(c, GradientFilm(), 12, batch=3, seed=1)
        assert [r.method for r in report.results] == ["steered", "grid", "random"]
        steered = report.by_method("steered")
        assert steered.n == 12 and report.by_method("grid").n == 12
        for r in report.results:
            assert 0 < r.rmse["q0"] < 0.5 and r.travel_s > 0
            assert c.get_experiment(r.experiment_id).n_measurements == r.n
        sugs = c.suggestions(steered.experiment_id)
        assert len(sugs) == 12 and all(s.status == "measured" for s in sugs)
        assert "RMSE q0" in report.table()


def test_image_detector_shows_the_ring_in_the_domain() -> None:
    film, det = GradientFilm(), ImageDetector(size=48)
    rng = np.random.default_rng(0)
    inside = det.image(film, {"x": 7.0, "y": -2.0}, rng)
    outside = det.image(film, {"x": 2.0, "y": 3.0}, rng)
    assert inside.shape == (48, 48) and inside.dtype == np.float32
    iq = Reduction(**det.reductions["ring_iq"])
    assert q_integral(inside, iq) > 2 * q_integral(outside, iq)


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_small_closed_loop_with_images(live_server: LiveServer) -> None:
    with Client(live_server.url) as c:
        report = compare(c, GradientFilm(), 8, batch=4, seed=2, images=True, detector_size=48)
        assert report.target == "ring_prob"
        for r in report.results:
            assert r.n == 8 and 0 <= r.rmse["ring_prob"] < 1.0
            ms = c.measurements(r.experiment_id)
            assert len(ms) == 8
            assert all(m.metadata["image"]["shape"] == [48, 48] for m in ms)
            assert all(0 <= m.values["ring_prob"] <= 1 and m.values["ring_iq"] > 0 for m in ms)
        assert "RMSE ring_prob" in report.table()


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_cli_simulate_images(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    from clients.cli.main import main

    code = main(["simulate", "--server", live_server.url, "--images", "--points", "6",
                 "--batch", "3", "--detector-size", "48", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "steering on ring_prob" in out and "RMSE ring_prob: steered/grid" in out
    assert all(m in out for m in ("steered", "grid", "random"))


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_cli_simulate_stops_on_the_estimated_map_error(
        live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """``--target-error``: the steered scan stops once the server's estimated map error is
    small enough (not before 10 d points), and the grid and random scans get as many."""
    import json

    from clients.cli.main import main

    code = main(["simulate", "--server", live_server.url, "--points", "150", "--batch", "4",
                 "--target-error", "0.05", "--no-progress", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    runs = {r["method"]: r for r in json.loads(out.out)["results"]}
    n = runs["steered"]["n"]
    assert 20 <= n < 150, out.err
    assert f"stopped at {n} points" in out.err
    assert runs["random"]["n"] == n and runs["grid"]["n"] <= n
    with Client(live_server.url) as c:
        exp = c.get_experiment(runs["steered"]["experiment_id"])
    assert exp.map_good_enough(0.05) and exp.n_measurements == n
    assert main(["simulate", "--server", live_server.url, "--target-error", "2"]) == 2


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_short_steered_scan_with_a_target_error_never_waits_for_a_fit(
        live_server: LiveServer) -> None:
    """Below 10 d points the rule is not checked: a scan of single points must not wait
    for a fit that 1 or 2 points never get (it used to, for the client's 120 s)."""
    from clients.simulate.run import run_steered, spec_for

    film = GradientFilm()
    bl = Beamline(film, seed=0)
    with Client(live_server.url, timeout=5) as c:
        exp = c.create_experiment(spec_for(film, bl.outputs, bl.outputs[0], name="short"))
        t0 = time.monotonic()
        assert run_steered(c, bl, exp, 5, batch=1, target_error=0.5) == 5
        assert time.monotonic() - t0 < 60
