"""Hyperparameter fits: warm starts from the last hyperparameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from botorch.models import SingleTaskGP
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior

from server.steering import engine as engmod
from server.steering import fit
from server.steering.engine import GPEngine
from server.steering.gp import Hyperparameters
from server.steering.spec import ExperimentSpec, Output, Parameter


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2))
    return X, 3.0 + 2.0 * np.sin(5 * X[:, 0]) * X[:, 1] + 0.05 * rng.standard_normal(n)


def test_warm_start_reexpresses_hyperparameters_in_the_new_standardization() -> None:
    X, y = data(30)
    init = Hyperparameters(kernel="matern52", lengthscale=np.array([0.3, 0.7]), noise=0.01,
                           mean_constant=0.2, y_mean=2.0, y_std=0.5)
    y_mean, y_std = 3.0, 2.0
    model = SingleTaskGP(torch.tensor(X), torch.tensor((y - y_mean) / y_std)[:, None],
                         covar_module=fit.covar_module("matern52", 2), outcome_transform=None)
    fit.warm_start(model, init, y_mean, y_std, learned_noise=True)
    with torch.no_grad():
        assert np.allclose(model.covar_module.lengthscale.numpy().ravel(), [0.3, 0.7])
        mean = float(model.mean_module.constant) * y_std + y_mean
        assert mean == pytest.approx(0.2 * 0.5 + 2.0)
        noise = float(model.likelihood.noise.reshape(-1)[0]) * y_std**2
        assert noise == pytest.approx(0.01 * 0.5**2)


def test_warm_fit_converges_to_the_cold_fit() -> None:
    X, y = data(80)
    cold = fit.fit_hyperparameters(X, y, None, "matern52", seed=1)
    warm = fit.fit_hyperparameters(X, y, None, "matern52", seed=1, init=cold, maxiter=50)
    assert np.allclose(warm.lengthscale, cold.lengthscale, rtol=0.05)
    assert warm.noise == pytest.approx(cold.noise, rel=0.1)
    # a warm start far from the optimum still gets there
    far = Hyperparameters(kernel="matern52", lengthscale=np.array([2.0, 0.05]), noise=0.3,
                          mean_constant=1.0, y_mean=0.0, y_std=1.0)
    back = fit.fit_hyperparameters(X, y, None, "matern52", seed=1, init=far)
    assert np.allclose(back.lengthscale, cold.lengthscale, rtol=0.1)


def test_engine_refits_start_from_the_last_hyperparameters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engmod, "WARM_START_MIN", 20)
    calls: list[dict[str, Any]] = []
    real = fit.fit_hyperparameters

    def spy(*args: Any, **kw: Any) -> Hyperparameters:
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(fit, "fit_hyperparameters", spy)
    spec = ExperimentSpec(name="t", parameters=(Parameter("x", 0, 1), Parameter("y", 0, 1)),
                          outputs=(Output("I"),))
    e = GPEngine(spec)
    X, y = data(60)
    e.ingest(X[:10], y[:10, None])
    e.refit()  # cold: nothing to start from
    e.ingest(X[10:30], y[10:30, None])
    e.refit()  # cold: the last fit saw only 10 points
    e.ingest(X[30:], y[30:, None])
    e.refit()  # warm
    assert [c.get("init") is not None for c in calls] == [False, False, True]
    assert calls[2]["init"].fitted_n == 30 and calls[2]["maxiter"] == engmod.WARM_MAXITER


def test_the_lengthscale_priors() -> None:
    """BoTorch's default is reproduced exactly, and a prior's median scales with sqrt(d)."""
    narrow = fit.LengthscalePrior(0.5, 1.0)
    for d in (1, 2, 3, 4, 7):
        ours = fit.BOTORCH_LENGTHSCALE_PRIOR.prior(d)
        theirs = get_covar_module_with_dim_scaled_prior(ard_num_dims=d).lengthscale_prior
        assert float(ours.loc) == float(theirs.loc)
        assert float(ours.scale) == float(theirs.scale)
        assert np.exp(float(narrow.prior(d).loc)) == pytest.approx(0.5 * np.sqrt(d / 2),
                                                                   rel=1e-6)
        assert float(narrow.prior(d).scale) == pytest.approx(1.0)
    for bad in ((0.0, 1.0), (-1.0, 1.0), (0.5, 0.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="must be"):
            fit.LengthscalePrior(*bad)


def test_map_experiments_fit_with_the_map_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    priors: list[fit.LengthscalePrior] = []
    real = fit.fit_hyperparameters

    def spy(*args: Any, **kw: Any) -> Hyperparameters:
        priors.append(kw["lengthscale_prior"])
        return real(*args, **kw)

    narrow = fit.LengthscalePrior(0.5, 1.0)
    monkeypatch.setattr(fit, "fit_hyperparameters", spy)
    monkeypatch.setattr(fit, "MAP_LENGTHSCALE_PRIOR", narrow)  # as tune_map.py sets it
    X, y = data(12)
    for goal in ("map", "maximize"):
        spec = ExperimentSpec(name="t", goal=goal, outputs=(Output("I"),),
                              parameters=(Parameter("x", 0, 1), Parameter("y", 0, 1)))
        e = GPEngine(spec)
        e.ingest(X, y[:, None])
        e.refit()
    assert priors == [narrow, fit.BOTORCH_LENGTHSCALE_PRIOR]


def test_a_narrower_prior_keeps_a_few_points_fit_at_a_map_s_scale() -> None:
    """Eight points of a map that varies along x and barely along y: under BoTorch's prior
    (median 5.8) the y lengthscale runs past the unit cube; a prior with median 0.5 about
    halves it. x, which the points do resolve, moves much less."""
    narrow = fit.LengthscalePrior(0.5, 1.0)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        X = rng.random((8, 2))
        y = np.sin(4 * X[:, 0]) + 0.3 * X[:, 1]
        wide = fit.fit_hyperparameters(X, y, np.full(8, 1e-4), "matern32")
        mapped = fit.fit_hyperparameters(X, y, np.full(8, 1e-4), "matern32",
                                         lengthscale_prior=narrow)
        assert wide.lengthscale[1] > 1.5
        assert mapped.lengthscale[1] < 0.6 * wide.lengthscale[1]
        assert mapped.lengthscale[0] > 0.65 * wide.lengthscale[0]
