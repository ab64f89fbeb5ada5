"""The simulated beamline: its physics and reductions offline, and a small closed loop
(steered, grid, random) against the live server."""

from __future__ import annotations

import numpy as np
import pytest

from clients import Client
from clients.simulate import Beamline, CurveReducer, GradientFilm, compare
from clients.simulate.run import grid_positions
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
