"""GPEngine: initial design, suggestions, refit schedule and failures, noise, threads."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from server.steering import engine as engine_module
from server.steering import fit
from server.steering.design import to_unit
from server.steering.engine import GPEngine
from server.steering.spec import Box, ExperimentSpec, Output, Parameter


def make_spec(**kw: Any) -> ExperimentSpec:
    base: dict[str, Any] = dict(
        name="t", parameters=(Parameter("x", 0, 10, speed=2.0), Parameter("y", -1, 4)),
        outputs=(Output("I"), Output("J")), forbidden=(Box({"x": (4, 6), "y": (0, 2)}),),
        seed=3)
    base.update(kw)
    return ExperimentSpec(**base)


def f(X: np.ndarray) -> np.ndarray:
    return np.sin(0.6 * X[:, 0]) + 0.5 * np.cos(1.1 * X[:, 1])


def data(spec: ExperimentSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(spec.bounds).T
    X = rng.uniform(lo, hi, (4 * n, spec.dim))
    X = X[~np.array([spec.is_forbidden(dict(zip(spec.parameter_names, x, strict=True)))
                     for x in X])][:n]
    Y = np.c_[f(X), 2.0 * X[:, 0]] if len(spec.outputs) == 2 else f(X)[:, None]
    return X, Y


def check_valid(spec: ExperimentSpec, X: np.ndarray) -> None:
    lo, hi = np.array(spec.bounds).T
    assert ((X >= lo) & (X <= hi)).all()
    assert not any(spec.is_forbidden(dict(zip(spec.parameter_names, x, strict=True))) for x in X)
    U = to_unit(spec, X)
    d = np.sqrt(((U[:, None] - U[None]) ** 2).sum(-1)) + np.eye(len(U))
    assert d.min() > 1e-3


def xs(cands: list) -> np.ndarray:
    return np.array([c.x for c in cands])


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    """Hyperparameters fitted once on 25 points; engines below warm-start from them."""
    spec = make_spec()
    e = GPEngine(spec)
    e.ingest(*data(spec, 25))
    e.refit()
    return e.hyperparameters()


def warm(fitted: dict[str, Any], n: int = 25, **kw: Any) -> tuple[GPEngine, ExperimentSpec]:
    spec = make_spec(**kw)
    e = GPEngine(spec, hyperparameters=fitted)
    e.ingest(*data(spec, n))
    return e, spec


def test_initial_design_is_valid_distinct_and_seeded() -> None:
    spec = make_spec(initial_design=8)
    a = GPEngine(spec).suggest(8)
    assert [c.source for c in a] == ["initial_design"] * 8
    assert all(c.acquisition is None and c.mean == {} for c in a)
    check_valid(spec, xs(a))
    b = GPEngine(spec).suggest(8)
    assert np.array_equal(xs(a), xs(b))
    other = GPEngine(make_spec(initial_design=8, seed=4)).suggest(8)
    assert not np.allclose(np.sort(xs(a), 0), np.sort(xs(other), 0))
    # parallel asks and resumed designs skip what is pending or measured
    e = GPEngine(spec)
    first = e.suggest(3)
    second = e.suggest(3, pending=xs(first))
    check_valid(spec, np.vstack([xs(first), xs(second)]))
    e.ingest(xs(first), np.c_[f(xs(first)), np.full(3, np.nan)])
    third = e.suggest(3, pending=xs(second))
    check_valid(spec, np.vstack([xs(first), xs(second), xs(third)]))


@pytest.mark.parametrize("acq", ["variance", "integrated_variance", "gradient_variance",
                                 "misfit_variance", "ucb", "ei"])
def test_suggest_after_data(fitted: dict[str, Any], acq: str) -> None:
    e, spec = warm(fitted, goal="maximize" if acq in ("ucb", "ei") else "map", acquisition=acq,
                     kernel="matern32")
    first = e.suggest(4)
    assert [c.source for c in first] == [acq] * 4
    assert all(c.acquisition is not None and np.isfinite(c.acquisition) for c in first)
    assert all(set(c.mean) == {"I", "J"} and c.std["I"] > 0 for c in first)
    # the target's mean/std come from the selection's own solves: same as posterior()
    post = e.posterior(xs(first))
    for k in ("I", "J"):
        assert np.allclose([c.mean[k] for c in first], post.mean[k], rtol=1e-9, atol=1e-9)
        assert np.allclose([c.std[k] for c in first], post.std[k], rtol=1e-9, atol=1e-9)
    check_valid(spec, xs(first))
    second = e.suggest(4, pending=xs(first))
    check_valid(spec, np.vstack([xs(first), xs(second)]))  # none of the first's places
    # determinism: the same state gives the same answer
    e2, _ = warm(fitted, goal="maximize" if acq in ("ucb", "ei") else "map", acquisition=acq,
                     kernel="matern32")
    assert np.array_equal(xs(e2.suggest(4)), xs(first))


def test_batch_is_ordered_for_travel(fitted: dict[str, Any]) -> None:
    e, spec = warm(fitted)
    start = np.array([0.0, -1.0])
    cands = xs(e.suggest(6, start=start))
    # time = max over axes |dx| / speed; y has no speed and costs nothing
    path = np.vstack([start, cands])
    cost = (np.abs(np.diff(path[:, 0])) / 2.0).sum()
    rev = np.vstack([start, cands[::-1]])
    assert cost <= (np.abs(np.diff(rev[:, 0])) / 2.0).sum() + 1e-9


def test_refit_schedule_status_and_posterior() -> None:
    spec = make_spec()
    e = GPEngine(spec)
    X, Y = data(spec, 12)
    e.ingest(X[:2], Y[:2])
    assert not e.needs_refit()
    assert np.isnan(e.posterior(X[:3]).mean["I"]).all()
    e.ingest(X[2:3], Y[2:3])
    assert e.needs_refit()
    st = e.refit()
    out = st.outputs["I"]
    assert out.fitted_n == 3 and out.fit_failures == 0 and out.last_fit_at is not None
    assert set(out.hyperparameters["lengthscales"]) == {"x", "y"}
    assert not e.needs_refit()
    e.ingest(X[3:5], Y[3:5])
    assert not e.needs_refit()  # 5 < 3 + max(3, 0.75)
    e.ingest(X[5:12], Y[5:12])
    assert e.needs_refit()
    e.refit()
    hp = e.hyperparameters()["I"]
    assert hp is not None and hp["fitted_n"] == 12
    # lengthscales in spec units are the normalized ones times the range
    assert hp["lengthscales"]["x"] == pytest.approx(10 * hp["lengthscales_normalized"][0])
    post = e.posterior(X)
    assert np.abs(post.mean["I"] - Y[:, 0]).max() < 0.1  # fits its data
    assert np.isfinite(post.std["J"]).all()
    # warm start from the reported hyperparameters reproduces the posterior
    w = GPEngine(spec, hyperparameters=e.hyperparameters())
    w.ingest(X, Y)
    assert np.allclose(w.posterior(X).mean["I"], post.mean["I"], atol=1e-8)


def test_failed_refit_keeps_model(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec()
    e = GPEngine(spec)
    X, Y = data(spec, 20)
    e.ingest(X[:8], Y[:8])
    e.refit()
    before = e.hyperparameters()

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("cholesky exploded")

    monkeypatch.setattr(fit, "fit_hyperparameters", broken)
    e.ingest(X[8:12], Y[8:12])
    assert e.needs_refit()
    st = e.refit()  # must not raise
    assert st.outputs["I"].fit_failures == 1 and "cholesky exploded" in st.outputs["I"].last_error
    assert e.hyperparameters() == before
    assert not e.needs_refit()  # no new data since the failure: don't hammer
    e.ingest(X[12:13], Y[12:13])
    assert e.needs_refit()
    # the old model still steers and includes the new rows
    assert np.abs(e.posterior(X[:13]).mean["I"] - Y[:13, 0]).max() < 0.2
    check_valid(spec, xs(e.suggest(2)))
    monkeypatch.undo()
    e.refit()
    assert e.status().outputs["I"].last_error is None


def test_duplicates_never_crash() -> None:
    spec = make_spec(initial_design=4)
    e = GPEngine(spec)
    X = np.array([[1.0, 1.0]] * 6 + [[1.0 + 1e-12, 1.0], [8.0, 3.0], [8.0, 3.0], [2.0, 3.5]])
    Y = np.c_[f(X) + np.r_[np.zeros(6), 0.3, 0, 0.1, 0], np.full(len(X), np.nan)]
    Yvar = np.c_[np.zeros(len(X)), np.full(len(X), np.nan)]
    e.ingest(X, Y, Yvar)  # zero noise at duplicates: needs jitter
    e.refit()
    e.ingest(X[:3], Y[:3], Yvar[:3])
    post = e.posterior(X)
    assert np.isfinite(post.mean["I"]).all() and np.isfinite(post.std["I"]).all()
    assert np.isnan(post.mean["J"]).all()  # J was never measured
    check_valid(spec, xs(e.suggest(3)))


def test_missing_values_of_a_second_output() -> None:
    spec = make_spec()
    e = GPEngine(spec)
    X, Y = data(spec, 16)
    Y[::2, 1] = np.nan
    e.ingest(X, Y)
    st = e.refit()
    assert st.outputs["I"].n == 16 and st.outputs["J"].n == 8
    assert st.outputs["J"].fitted_n == 8
    post = e.posterior(X)
    assert np.abs(post.mean["J"][1::2] - Y[1::2, 1]).max() < 0.5


def test_per_point_noise_is_used() -> None:
    spec = make_spec(outputs=(Output("I"),), forbidden=())
    X, Y = data(spec, 20)
    Yvar = np.full_like(Y, 1e-4)
    Yvar[0] = 0.5
    e = GPEngine(spec)
    e.ingest(X, Y, Yvar)
    st = e.refit()
    assert st.outputs["I"].hyperparameters["noise_model"] == "fixed"
    quiet = GPEngine(spec, hyperparameters=e.hyperparameters())
    quiet.ingest(X, Y, np.full_like(Y, 1e-4))
    assert e.posterior(X[:1]).std["I"][0] > 3 * quiet.posterior(X[:1]).std["I"][0]


@pytest.mark.parametrize("acq,goal", [("ucb", "maximize"), ("ei", "maximize"),
                                      ("ei", "minimize")])
def test_bayesian_optimization_finds_the_optimum(acq: str, goal: str) -> None:
    sign = 1.0 if goal == "maximize" else -1.0

    def g(X: np.ndarray) -> np.ndarray:
        return sign * np.exp(-((X[:, 0] - 6.5) ** 2 / 4 + (X[:, 1] - 1.0) ** 2 / 2))

    spec = make_spec(outputs=(Output("I"),), forbidden=(), acquisition=acq, goal=goal)
    e = GPEngine(spec)
    for _ in range(30):
        X = xs(e.suggest(1))
        e.ingest(X, g(X)[:, None])
        if e.needs_refit():
            e.refit()
    Xall = e._X[: e._n]
    assert (sign * g(Xall)).max() > 0.99


def test_integrated_variance_beats_random() -> None:
    spec = make_spec(outputs=(Output("I"),), forbidden=(), initial_design=4)
    grid = np.stack(np.meshgrid(np.linspace(0, 10, 30), np.linspace(-1, 4, 20)), -1)
    grid = grid.reshape(-1, 2)

    def rmse(e: GPEngine) -> float:
        return float(np.sqrt(np.mean((e.posterior(grid).mean["I"] - f(grid)) ** 2)))

    steered = GPEngine(spec)
    while steered._n < 40:
        X = xs(steered.suggest(4))
        steered.ingest(X, f(X)[:, None])
        if steered.needs_refit():
            steered.refit()
    steered.refit()
    errors = []
    for seed in range(3):
        rand = GPEngine(spec)
        X = np.random.default_rng(seed).uniform([0, -1], [10, 4], (40, 2))
        rand.ingest(X, f(X)[:, None])
        rand.refit()
        errors.append(rmse(rand))
    assert rmse(steered) < 0.7 * float(np.median(errors))


def test_refit_in_a_thread_does_not_block_suggest(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec()
    e = GPEngine(spec)
    X, Y = data(spec, 30)
    e.ingest(X[:20], Y[:20])
    e.refit()
    release = threading.Event()
    entered = threading.Event()
    real = fit.fit_hyperparameters

    def slow(*args: Any, **kw: Any) -> Any:
        entered.set()
        assert release.wait(60), "test never released the fit"
        return real(*args, **kw)

    monkeypatch.setattr(fit, "fit_hyperparameters", slow)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(e.refit()))
    thread.start()
    try:
        assert entered.wait(60)
        assert e.status().refitting and not e.needs_refit()
        # while the fit is parked, everything else works
        cands = e.suggest(3)
        check_valid(spec, xs(cands))
        e.ingest(X[20:], Y[20:])
        assert np.isfinite(e.posterior(X).mean["I"]).all()
        assert e.status().refitting
    finally:
        release.set()
        thread.join(120)
    assert not thread.is_alive() and not result[0].refitting
    assert result[0].outputs["I"].fitted_n == 20  # the snapshot
    # the rebuilt posterior includes the rows that arrived during the fit
    assert e._outputs[0].gp is not None and e._outputs[0].gp.n == 30


def test_default_kernel_follows_the_goal_and_reaches_the_fit() -> None:
    """``map`` defaults to Matern 3/2, optimization to 5/2; an explicit kernel is kept, and
    the spec's kernel is the one the hyperparameters are fitted with."""
    assert make_spec().kernel == "matern32"
    assert make_spec(goal="maximize").kernel == "matern52"
    assert make_spec(kernel="rbf").kernel == "rbf"
    spec = make_spec()
    assert ExperimentSpec.from_dict(spec.to_dict()).kernel == "matern32"
    old = {**spec.to_dict(), "kernel": "matern52"}  # a spec stored before the new default
    assert ExperimentSpec.from_dict(old).kernel == "matern52"
    engine = GPEngine(spec)
    X, Y = data(spec, 12)
    engine.ingest(X, Y)
    engine.refit()
    assert all(h is not None and h["kernel"] == "matern32"
               for h in engine.hyperparameters().values())


def test_integration_points_thin_out_above_the_dense_limit(monkeypatch) -> None:
    """Integrated variances use 4x fewer integration points once a posterior is built on
    more than ``INTEGRATION_DENSE_UP_TO`` measurements (the ask's cost grows with points x
    N); the candidate set stays, and a posterior grown by ingests keeps its points until
    the next refit."""
    monkeypatch.setattr(engine_module, "INTEGRATION_DENSE_UP_TO", 20)
    spec = make_spec()  # 2-D map, misfit_variance
    e = GPEngine(spec)
    X, Y = data(spec, 40)

    def points() -> tuple[int, int]:
        cache = e._outputs[0].gp.cache
        return cache.M, len(cache.P) - cache.M

    e.ingest(X[:15], Y[:15])
    e.refit()
    M, dense = points()  # 1024 Sobol points in 2-D, less those in the forbidden region
    assert 0.8 * 1024 < dense <= 1024
    e.ingest(X[15:30], Y[15:30])
    assert points() == (M, dense)  # grown by ingests: same points
    e.refit()  # built on 30 > 20
    M2, sparse = points()
    assert M2 == M and 0.8 * 256 < sparse <= 256
    assert len(e.suggest(2)) == 2
