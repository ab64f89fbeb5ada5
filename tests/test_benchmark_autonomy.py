"""The sample-efficiency benchmark's maps and grids are fixed (benchmarks/autonomy.py)."""

import math

import numpy as np
import pytest

from benchmarks.autonomy import grid_counts, grid_points, n_to_reach
from benchmarks.maps import MAPS, validation_maps


@pytest.mark.parametrize("name", sorted(MAPS))
def test_maps_are_deterministic_and_finite(name: str) -> None:
    m = MAPS[name]
    T = m.test_points()
    assert T.shape == (4096, m.dim)
    assert np.array_equal(T, m.test_points())
    t = m.truth(T)
    assert np.isfinite(t).all() and m.value_range() > 0
    assert ((T >= m.lower) & (T <= m.upper)).all()


def test_validation_maps_are_seeded_and_held_out() -> None:
    """The tuning maps are deterministic, differ from each other and from the benchmark's."""
    a, b = validation_maps(), validation_maps()
    assert sorted(a) == [f"val-{d}d-{s}" for d in (2, 3, 4) for s in range(4)]
    assert not set(a) & set(MAPS)
    values = []
    for name, m in a.items():
        T = m.test_points()
        t = m.truth(T)
        assert np.array_equal(t, b[name].truth(T)) and np.isfinite(t).all()
        assert m.value_range() > 0.1  # a boundary or a spot, not a flat plate
        values.append(t[:64])
    assert len({v.round(6).tobytes() for v in values}) == len(values)


@pytest.mark.parametrize(("n", "d", "counts"), [
    (25, 2, (5, 5)), (30, 2, (6, 5)), (400, 4, (5, 5, 4, 4)), (10, 4, (2, 2, 2, 1)),
    (100, 3, (5, 5, 4))])
def test_grid_is_the_largest_balanced_grid(n: int, d: int, counts: tuple[int, ...]) -> None:
    assert grid_counts(n, d) == counts
    assert math.prod(counts) <= n


def test_grid_points_are_cell_centres() -> None:
    X = grid_points(MAPS["film-2d"], 25)
    assert X.shape == (25, 2)
    assert np.allclose(np.unique(X[:, 0]), [1, 3, 5, 7, 9])


def test_n_to_reach_interpolates_log_log() -> None:
    ns = [10, 100, 1000]
    assert n_to_reach(ns, np.array([0.1, 0.01, 0.001]), 0.01) == pytest.approx(100)
    assert n_to_reach(ns, np.array([0.1, 0.01, 0.001]), 0.0316227766) == pytest.approx(31.6227766)
    assert n_to_reach(ns, np.array([0.1, 0.05, 0.04]), 0.01) is None
    assert n_to_reach(ns, np.array([0.005, 0.004, 0.003]), 0.01) == 10


def _results(curves: dict[tuple[str, int], list[float]]) -> list[dict]:
    return [{"map": "film-2d", "strategy": st, "seed": seed, "rmse": c}
            for (st, seed), c in curves.items()]


def test_seed_bootstrap_spreads_the_verdicts_over_the_seeds() -> None:
    from benchmarks.autonomy import Config, bootstrap

    ns = (10, 100, 1000)
    cfg = Config(maps=("film-2d",), seeds=(0, 1, 2), strategies=("beamsteer", "grid"),
                 checkpoints=ns, jobs=1, out=None, quick=False, known_noise=True)
    # the grid reaches 5% at N=100 and 2% at 1000 on every seed; Beamsteer reaches 5% at 10
    # on seeds 0 and 1, at 1000 on seed 2 (so a draw's mean curve may or may not cross early)
    grid = [0.2, 0.05, 0.02]
    curves = {("grid", s): grid for s in range(3)}
    curves |= {("beamsteer", 0): [0.04, 0.03, 0.01], ("beamsteer", 1): [0.04, 0.03, 0.01],
               ("beamsteer", 2): [0.3, 0.2, 0.05]}
    boot = bootstrap(cfg, _results(curves), reps=400)
    assert boot is not None and boot["seeds"] == [0, 1, 2]
    five = boot["mean_ratio"]["0.05"]
    # every draw without seed 2 crosses 5% at N=10 (ratio 0.1); with it, later
    assert five["p05"] == pytest.approx(0.1) and five["p95"] > 0.8
    assert 0.1 < five["met"] < 0.9  # some draws meet the target, others do not
    assert 0.1 < boot["not_above_grid"]["film-2d"]["0.05"] < 0.9
    # a verdict the seeds agree on does not spread
    same = {k: (v if k[0] == "grid" else [0.04, 0.03, 0.01]) for k, v in curves.items()}
    agreed = bootstrap(cfg, _results(same), reps=50)
    assert agreed["mean_ratio"]["0.05"]["met"] == 1.0
    assert agreed["not_above_grid"]["film-2d"] == {"0.05": 1.0, "0.02": 1.0}
    assert bootstrap(cfg.__class__(**{**cfg.__dict__, "seeds": (0, 1)}),
                     _results(curves), reps=10) is None  # too few seeds to resample


def test_stopping_on_the_estimate_reports_where_and_how_good() -> None:
    """The stop table takes each run's stop (N and the true RMSE there) and the estimate's
    ratio to the true RMSE from 10 d points on, beside the oracle and grid N."""
    from benchmarks.autonomy import Config, analyse, stopping, stopping_table

    ns = (10, 20, 40)
    cfg = Config(maps=("film-2d",), seeds=(0, 1), strategies=("beamsteer", "grid"),
                 checkpoints=ns, jobs=1, out=None, quick=False, known_noise=True)
    est = [None] * 9 + [0.2] * 10 + [0.06] * 10 + [0.03] * 11  # 40 tells; 10 d = 20
    results = _results({("grid", 0): [0.2, 0.1, 0.04], ("grid", 1): [0.2, 0.1, 0.04],
                        ("beamsteer", 0): [0.1, 0.05, 0.02],
                        ("beamsteer", 1): [0.1, 0.05, 0.02]})
    for r in results:
        if r["strategy"] == "beamsteer":
            r["estimate"] = est
            # seed 0 stopped at 5% on N=30 with a true RMSE of 4%; seed 1 at 40 with 6%
            r["stops"] = {"0.05": {"n": 30, "rmse": 0.04} if r["seed"] == 0
                          else {"n": 40, "rmse": 0.06}}
    stop = stopping(cfg, results, analyse(cfg, results))
    assert stop is not None
    five, two = stop["rows"]
    assert five["n"] == [30, 40] and five["met"] == 1 and five["stopped"] == 2
    assert five["oracle_n"] == pytest.approx(20)
    assert five["grid_n"] == pytest.approx(20 * 2 ** (math.log(2) / math.log(2.5)))  # log-log
    assert two["stopped"] == 0 and two["oracle_n"] == 40
    # from N=20 on: the estimate after the 20th tell is 0.06 (true 0.05: 1.2x), after the
    # 40th 0.03 (true 0.02: 1.5x); N=10 is before 10 d
    c = stop["calibration"]["film-2d"]
    assert c["checkpoints"] == 4 and c["p50"] == pytest.approx(1.35)
    table = stopping_table(stop, 40)
    assert "| film-2d | 5% | 2/2 | 35 [30-40] | 5.00 [6.00] | 1/2 |" in table
    assert "| film-2d | 2% | 0/2 | - | - | - |" in table
    # a run without the grid says nothing about it (not "> 40")
    alone = [r for r in results if r["strategy"] == "beamsteer"]
    cfg_alone = Config(**{**cfg.__dict__, "strategies": ("beamsteer",)})
    table = stopping_table(stopping(cfg_alone, alone, analyse(cfg_alone, alone)), 40)
    assert "| film-2d | 5% | 2/2 | 35 [30-40] | 5.00 [6.00] | 1/2 | 20 | - |" in table
    # runs from before the estimate existed: no table
    assert stopping(cfg, _results({("beamsteer", 0): [0.1, 0.05, 0.02]}),
                    analyse(cfg, results)) is None


def test_the_beamsteer_run_records_the_estimate_after_every_tell_and_its_stops() -> None:
    """A short real run (the service over HTTP): one estimate per tell, and a stop at the
    first tell from 10 d on whose estimate met the threshold, with the true RMSE there."""
    from benchmarks.autonomy import Problem, run_beamsteer

    p = Problem(MAPS["gradient-film-2d"], seed=0, n_max=24)
    out = run_beamsteer(p, (10, 20, 24), lambda n: None)
    est = out["estimate"]
    assert len(est) == 24 and est[0] is None  # no posterior after one point
    assert all(e is not None and e > 0 for e in est[3:])
    assert "0.05" in out["stops"]  # this map's estimate is below 5% by N = 20
    for key, stop in out["stops"].items():
        n, t = stop["n"], float(key)
        assert n >= 20 and est[n - 1] <= t
        assert all(e > t for e in est[19:n - 1])  # the first from 10 d on
        if n in (20, 24):
            assert stop["rmse"] == out["rmse"][(10, 20, 24).index(n)]


def test_batches_run_beamsteer_alone_on_whole_batch_checkpoints() -> None:
    from benchmarks.autonomy import parse_args

    cfg = parse_args(["--strategies", "beamsteer", "--batch", "4"])
    assert cfg.batch == 4 and all(c % 4 == 0 for c in cfg.checkpoints)
    assert cfg.checkpoints[:4] == (12, 16, 20, 28) and cfg.checkpoints[-1] == 400
    assert parse_args([]).batch == 1
    with pytest.raises(SystemExit):  # the peers ask one point at a time
        parse_args(["--batch", "4"])
