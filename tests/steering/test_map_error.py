"""The steering output's estimated map error (``OutputStatus.map_error``).

It is read from the point cache that ingests keep current; here it is checked against the
posterior recomputed from scratch at the same points, on the exact GP and on tiles, and
against the true error of a map with a known truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from server.steering import engine as engmod
from server.steering.design import from_unit
from server.steering.engine import GPEngine
from server.steering.spec import Box, ExperimentSpec, Output, Parameter
from tests.steering.test_local import fitted_hp, problem
from tests.steering.test_local import spec as tile_spec


def smooth(X: np.ndarray) -> np.ndarray:
    return np.sin(0.6 * X[:, 0]) + 0.5 * np.cos(1.1 * X[:, 1])


def two_outputs() -> ExperimentSpec:
    return ExperimentSpec(
        name="t", parameters=(Parameter("x", 0, 10), Parameter("y", -1, 4)),
        outputs=(Output("I"), Output("J")), forbidden=(Box({"x": (4, 6), "y": (0, 2)}),),
        target="I", seed=3)


def uniform(spec: ExperimentSpec, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(spec.bounds).T
    X = rng.uniform(lo, hi, (4 * n, spec.dim))
    keep = ~np.array([spec.is_forbidden(dict(zip(spec.parameter_names, x, strict=True)))
                      for x in X])
    return X[keep][:n]


def recomputed_rms_std(e: GPEngine, output: str) -> float:
    """The RMS posterior std at the engine's candidate set, predicted from scratch."""
    P, M = e._points_for(e.status().outputs[output].n)
    std = e.posterior(from_unit(e.spec, P[:M].numpy())).std[output]
    return float(np.sqrt(np.mean(std**2)))


def test_map_error_is_the_rms_posterior_std_over_the_allowed_region() -> None:
    spec = two_outputs()
    e = GPEngine(spec)
    assert e.status().outputs["I"].map_error is None  # no posterior yet
    X = uniform(spec, 40, seed=1)
    Y = np.c_[smooth(X), 2.0 * X[:, 0]]
    e.ingest(X[:20], Y[:20])
    e.refit()
    e.ingest(X[20:], Y[20:])  # the cache grown by an ingest, not rebuilt
    st = e.status()
    err = st.outputs["I"].map_error
    assert st.outputs["J"].map_error is None  # only the steering output
    assert err is not None and err.n == 40
    assert err.rms_std == pytest.approx(recomputed_rms_std(e, "I"), rel=1e-6)
    assert err.measured_range == pytest.approx(np.ptp(Y[:, 0]))
    # relative to the range the fit saw (20 rows), until a refit sees the other 20
    assert err.relative == pytest.approx(err.rms_std / np.ptp(Y[:20, 0]))
    # more data, smaller error
    more = uniform(spec, 120, seed=2)[40:]
    e.ingest(more, np.c_[smooth(more), 2.0 * more[:, 0]])
    later = e.status().outputs["I"].map_error
    assert later is not None and later.n == 120 and later.rms_std < 0.7 * err.rms_std


def test_map_error_estimates_the_true_error_of_a_smooth_map() -> None:
    """With the model right (a smooth map, the noise known), the estimate is on the scale
    of the posterior mean's RMSE against the truth."""
    spec = two_outputs()
    spec = ExperimentSpec(name="t", parameters=spec.parameters, outputs=(Output("I"),),
                          seed=3)
    rng = np.random.default_rng(5)
    X = uniform(spec, 60, seed=4)
    noise_sd = 0.02
    e = GPEngine(spec)
    e.ingest(X, (smooth(X) + noise_sd * rng.standard_normal(len(X)))[:, None],
             np.full((len(X), 1), noise_sd**2))
    e.refit()
    err = e.status().outputs["I"].map_error
    T = uniform(spec, 4000, seed=6)
    true_rmse = float(np.sqrt(np.mean((e.posterior(T).mean["I"] - smooth(T)) ** 2)))
    assert err is not None
    assert 0.5 < err.rms_std / true_rmse < 2.0


def test_map_error_on_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engmod, "LEAF", 150)
    monkeypatch.setattr(engmod, "CAP", 400)
    s = tile_spec()
    _, X, y, _ = problem(900, seed=7)
    e = GPEngine(s, hyperparameters=fitted_hp(s), local_above=500)
    e.ingest(X[:800].numpy(), y[:800, None].numpy())
    e.ingest(X[800:].numpy(), y[800:, None].numpy())
    info = e.model_info()["I"]
    assert info is not None and info["kind"] == "tiled"
    err = e.status().outputs["I"].map_error
    assert err is not None and err.n == 900
    assert err.rms_std == pytest.approx(recomputed_rms_std(e, "I"), rel=1e-6)


def test_a_glitch_since_the_last_fit_does_not_make_the_map_look_better() -> None:
    """One absurd value after a fit: the relative error stays what the fitted model says
    (it was 1e-8 of the glitch's range); a broken posterior reports no error at all."""
    spec = two_outputs()
    X = uniform(spec, 31, seed=3)
    Y = np.c_[smooth(X), 2.0 * X[:, 0]]
    e = GPEngine(spec)
    e.ingest(X[:30], Y[:30])
    e.refit()
    before = e.status().outputs["I"].map_error
    assert before is not None and before.relative is not None
    e.ingest(X[30:], np.array([[1e6, 0.0]]))
    after = e.status().outputs["I"].map_error
    assert after is not None and after.measured_range > 1e5
    assert after.relative == pytest.approx(before.relative, rel=0.2)
    e.refit()  # the fit sees it now: a model with a huge error (not a good map)
    refit = e.status().outputs["I"].map_error
    assert refit is not None and refit.relative is not None and refit.relative > 0.05

    broken = GPEngine(spec)  # a value whose square overflows (the API refuses these)
    broken.ingest(X[:30], Y[:30])
    broken.refit()
    with np.errstate(over="ignore"):
        broken.ingest(X[30:], np.array([[1.5e308, 0.0]]))
        assert not np.isfinite(broken.posterior(X[:1]).mean["I"]).all()
    assert broken.status().outputs["I"].map_error is None


def test_map_error_counts_only_the_rows_where_the_target_was_measured() -> None:
    """Rows without the steering output (NaN) are neither in its posterior nor in its
    measured range; a constant output has no range, so no relative error."""
    spec = two_outputs()
    X = uniform(spec, 30, seed=7)
    Y = np.c_[smooth(X), 2.0 * X[:, 0]]
    Y[::3, 0] = np.nan  # I not measured on every third row
    Y[1, 0] = 50.0  # ... and an outlier where it was, which the range must see
    e = GPEngine(spec)
    e.ingest(X, Y)
    e.refit()
    err = e.status().outputs["I"].map_error
    measured = Y[:, 0][~np.isnan(Y[:, 0])]
    assert err is not None and err.n == len(measured) == 20
    assert err.measured_range == pytest.approx(np.ptp(measured))

    flat = ExperimentSpec(name="t", parameters=spec.parameters, outputs=(Output("I"),))
    e = GPEngine(flat)
    e.ingest(X[:10], np.full((10, 1), 3.0))
    e.refit()
    err = e.status().outputs["I"].map_error
    assert err is not None and err.measured_range == 0 and err.relative is None
