"""Leave-one-out residuals of the exact GP and the weights of ``misfit_variance``."""

from __future__ import annotations

import math

import numpy as np
import torch

from server.steering.acquisition import Scorer, misfit_weights
from server.steering.gp import ExactGP, Fantasies, Hyperparameters
from server.steering.optimize import select

DT = torch.float64


def toy_gp(n: int = 30, d: int = 2, seed: int = 0) -> ExactGP:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, dtype=DT, generator=g)
    y = torch.sin(4 * X).sum(1) + 0.05 * torch.randn(n, dtype=DT, generator=g)
    noise = 1e-3 * (1 + torch.rand(n, dtype=DT, generator=g))  # heteroscedastic
    hp = Hyperparameters("matern52", np.full(d, 0.3), 1e-3, 0.1, 0.0, 1.0)
    return ExactGP.build(hp, X, y, noise)


def test_loo_matches_brute_force_refits() -> None:
    gp = toy_gp()
    r, var = gp.loo()
    for i in range(gp.n):
        keep = torch.arange(gp.n) != i
        sub = ExactGP.build(gp.hp, gp.X[keep], gp.y[keep], gp.noise[keep])
        mean, v = sub.predict(gp.X[i:i + 1])
        assert math.isclose(float(r[i]), float(gp.y[i] - mean), rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(float(var[i]), float(v + gp.noise[i]), rel_tol=1e-6, abs_tol=1e-9)


def test_loo_is_carried_through_extend() -> None:
    full = toy_gp(40)
    part = ExactGP.build(full.hp, full.X[:25], full.y[:25], full.noise[:25])
    part.loo()  # computed from scratch here, then updated by the extensions
    grown = part.extend(full.X[25:33], full.y[25:33], full.noise[25:33])
    grown = grown.extend(full.X[33:], full.y[33:], full.noise[33:])
    assert grown._kinv_diag is not None
    for a, b in zip(grown.loo(), full.loo(), strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def step_gp() -> ExactGP:
    """A 1-D GP (lengthscale too long for it) on a sharp step at x = 0.3."""
    X = torch.linspace(0, 1, 41, dtype=DT).unsqueeze(-1)
    y = torch.tanh((X[:, 0] - 0.3) / 0.02)
    hp = Hyperparameters("matern52", np.array([0.15]), 1e-3, 0.0, 0.0, 1.0)
    return ExactGP.build(hp, X, y, torch.full((41,), 1e-3, dtype=DT))


def test_misfit_weights_concentrate_at_a_step() -> None:
    gp = step_gp()
    Z = torch.linspace(0, 1, 201, dtype=DT).unsqueeze(-1)
    w = misfit_weights(gp, Z, share=0.5)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-12)
    assert (w >= 0.5 - 1e-12).all()  # the uniform half keeps covering the plateaus
    near = (Z[:, 0] - 0.3).abs() < 0.05
    assert float(w[near].mean()) > 3 * float(w[~near].mean())
    assert abs(float(Z[w.argmax(), 0]) - 0.3) < 0.05
    assert torch.equal(misfit_weights(gp, Z, share=0.0), torch.ones(201, dtype=DT))


def test_misfit_weights_stay_near_one_where_the_model_is_right() -> None:
    """On draws from the GP itself the squared standardized LOO residuals are ~chi2(1)
    everywhere: smoothed, no region gets the weight a step gets (share 1: all misfit)."""
    X = torch.linspace(0, 1, 41, dtype=DT).unsqueeze(-1)
    hp = Hyperparameters("matern52", np.array([0.2]), 1e-2, 0.0, 0.0, 1.0)
    K = ExactGP.build(hp, X, torch.zeros(41, dtype=DT), torch.full((41,), 1e-2, dtype=DT))
    L = K.chol.dense()
    Z = torch.linspace(0, 1, 201, dtype=DT).unsqueeze(-1)
    step = float(misfit_weights(step_gp(), Z, share=1.0).max())
    for seed in range(5):
        y = L @ torch.randn(41, dtype=DT, generator=torch.Generator().manual_seed(seed))
        gp = ExactGP.build(hp, X, y, torch.full((41,), 1e-2, dtype=DT))
        w = misfit_weights(gp, Z, share=1.0)
        assert float(w.max()) < 2.5 < step


def test_misfit_variance_picks_near_the_step_as_a_batch() -> None:
    gp = step_gp()
    C = torch.linspace(0, 1, 400, dtype=DT).unsqueeze(-1)
    Z = torch.linspace(0.0025, 0.9975, 200, dtype=DT).unsqueeze(-1)

    def picks(weights: torch.Tensor | None, pending: np.ndarray) -> np.ndarray:
        fant = Fantasies(gp, C, Z, 1e-3, weights=weights)
        chosen = select(Scorer("misfit_variance", fant, noise=1e-3), 4, pending,
                        lambda U: np.zeros(len(U), dtype=bool))
        return np.array([p.x for p in chosen])

    w = misfit_weights(gp, Z, share=0.8)
    weighted, plain = picks(w, np.zeros((0, 1))), picks(None, np.zeros((0, 1)))
    assert ((weighted >= 0) & (weighted <= 1)).all()
    assert len(np.unique(weighted.round(6))) == 4  # kriging believer keeps the batch diverse
    assert np.abs(weighted - 0.3).mean() < np.abs(plain - 0.3).mean()
    assert np.abs(weighted - 0.3).min() < 0.05
    # with the first batch pending, the next one goes elsewhere
    again = picks(w, weighted)
    assert np.abs(again[:, None] - weighted[None, :]).min() > 1e-4
