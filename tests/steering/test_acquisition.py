"""Acquisition helpers: the stable log expected improvement, gradient weights."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import torch

from server.steering.acquisition import Scorer, gradient_weights, log_h
from server.steering.gp import ExactGP, Fantasies, Hyperparameters
from server.steering.optimize import select


def test_log_h_matches_direct_formula() -> None:
    z = torch.linspace(-8, 8, 161, dtype=torch.float64)
    mp.mp.dps = 50  # reference in arbitrary precision (torch's ndtr loses digits below -5)
    direct = torch.tensor([float(mp.log(mp.npdf(v) + v * mp.ncdf(v)))
                           for v in (mp.mpf(float(x)) for x in z)], dtype=torch.float64)
    assert torch.allclose(log_h(z), direct, rtol=1e-9, atol=1e-9)


def test_log_h_is_finite_and_increasing_far_in_the_tail() -> None:
    z = -torch.logspace(0, 9, 200, dtype=torch.float64).flip(0)  # -1e9 .. -1
    z.requires_grad_(True)
    v = log_h(z)
    (g,) = torch.autograd.grad(v.sum(), z)
    assert torch.isfinite(v).all() and torch.isfinite(g).all() and (g > 0).all()
    assert (v.diff() > 0).all()
    # asymptote log phi(z) - 2 log|z|
    expected = -0.5e18 - 0.5 * math.log(2 * math.pi) - 2 * math.log(1e9)
    assert math.isclose(float(v[0].detach()), expected, rel_tol=1e-12)


def step_gp(kernel: str = "matern52") -> ExactGP:
    """A 1-D GP on a smoothed step at x = 0.3, measured on an even grid."""
    X = torch.linspace(0, 1, 25, dtype=torch.float64).unsqueeze(-1)
    y = torch.tanh((X[:, 0] - 0.3) / 0.03)
    hp = Hyperparameters(kernel, np.array([0.1]), 1e-4, 0.0, 0.0, 1.0)
    return ExactGP.build(hp, X, y, torch.full((25,), 1e-4, dtype=torch.float64))


def test_mean_gradient_matches_autograd() -> None:
    for kernel in ("matern52", "matern32", "rbf"):
        gp = step_gp(kernel)
        Z = torch.rand(40, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        Zg = Z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(gp.predict(Zg)[0].sum(), Zg)
        assert torch.allclose(gp.mean_gradient(Z), g, rtol=1e-9, atol=1e-9)


def test_gradient_weights_concentrate_at_a_step() -> None:
    gp = step_gp()
    Z = torch.linspace(0, 1, 201, dtype=torch.float64).unsqueeze(-1)
    w = gradient_weights(gp, Z, share=0.5)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-12)
    assert (w >= 0.5 - 1e-12).all()  # the uniform half keeps covering the plateaus
    near = (Z[:, 0] - 0.3).abs() < 0.05
    assert float(w[near].mean()) > 3 * float(w[~near].mean())
    assert abs(float(Z[w.argmax(), 0]) - 0.3) < 0.03
    assert torch.equal(gradient_weights(gp, Z, share=0.0), torch.ones(201, dtype=torch.float64))


def test_gradient_variance_picks_near_the_step_and_in_bounds() -> None:
    gp = step_gp()
    C = torch.linspace(0, 1, 400, dtype=torch.float64).unsqueeze(-1)
    Z = torch.linspace(0.0025, 0.9975, 200, dtype=torch.float64).unsqueeze(-1)

    def picks(weights: torch.Tensor | None) -> np.ndarray:
        fant = Fantasies(gp, C, Z, 1e-4, weights=weights)
        chosen = select(Scorer("gradient_variance", fant, noise=1e-4), 4, np.zeros((0, 1)),
                        lambda U: np.zeros(len(U), dtype=bool))
        return np.array([p.x for p in chosen])

    weighted, plain = picks(gradient_weights(gp, Z, share=0.8)), picks(None)
    assert ((weighted >= 0) & (weighted <= 1)).all()
    assert len(np.unique(weighted.round(6))) == 4  # the batch stays diverse
    assert np.abs(weighted - 0.3).mean() < np.abs(plain - 0.3).mean()
    assert np.abs(weighted - 0.3).min() < 0.05
