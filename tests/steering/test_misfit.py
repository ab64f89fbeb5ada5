"""The weights of ``misfit_variance``: EIGF's local error on the integration points."""

from __future__ import annotations

import math

import numpy as np
import torch

from server.steering.acquisition import Scorer, misfit_weights
from server.steering.gp import ExactGP, Fantasies, Hyperparameters
from server.steering.optimize import select

DT = torch.float64


def step_gp() -> ExactGP:
    """A 1-D GP on a sharp step at x = 0.3, measured on an even grid."""
    X = torch.linspace(0, 1, 26, dtype=DT).unsqueeze(-1)
    y = torch.tanh((X[:, 0] - 0.3) / 0.02)
    hp = Hyperparameters("matern52", np.array([0.15]), 1e-3, 0.0, 0.0, 1.0)
    return ExactGP.build(hp, X, y, torch.full((26,), 1e-3, dtype=DT))


def test_misfit_weights_are_eigf_local_errors() -> None:
    gp = step_gp()
    Z = torch.rand(50, 1, dtype=DT, generator=torch.Generator().manual_seed(3))
    w = misfit_weights(gp, Z, share=1.0)
    mean = gp.predict(Z)[0]
    nearest = (Z - gp.X.T).abs().argmin(1)  # brute force, 1-D
    e = (mean - gp.y[nearest]) ** 2
    assert torch.allclose(w, e / e.mean(), rtol=1e-10, atol=1e-12)
    # the engine passes the cached mean: same weights
    assert torch.allclose(misfit_weights(gp, Z, share=1.0, mean=mean), w, rtol=0, atol=0)


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


def test_misfit_weights_of_a_flat_map_are_uniform() -> None:
    X = torch.linspace(0, 1, 11, dtype=DT).unsqueeze(-1)
    hp = Hyperparameters("matern52", np.array([0.3]), 1e-4, 0.0, 0.0, 1.0)
    gp = ExactGP.build(hp, X, torch.zeros(11, dtype=DT), torch.full((11,), 1e-4, dtype=DT))
    Z = torch.linspace(0, 1, 31, dtype=DT).unsqueeze(-1)
    assert torch.equal(misfit_weights(gp, Z), torch.ones(31, dtype=DT))


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
