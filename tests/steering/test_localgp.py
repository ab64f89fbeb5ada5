"""Per-start local GPs: each equals a local exact GP of its own neighbourhood."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.steering import optimize as opt
from server.steering.acquisition import Scorer
from server.steering.gp import ExactGP, Fantasies, Hyperparameters
from server.steering.localgp import LocalGPs

D = torch.float64


@pytest.mark.parametrize("kernel", ["matern52", "matern32", "rbf"])
@pytest.mark.parametrize("case", ["variance", "integrated", "weighted"])
def test_each_model_equals_a_local_gp_of_its_neighbourhood(kernel: str, case: str) -> None:
    """With fantasies and (weighted) integration points: model ``j`` of a batch gives the
    values and gradients of an exact GP of start ``j``'s neighbourhood, conditioned on the
    same fantasies, with the integration points within the union model's reach of start
    ``j``."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(600, 2, generator=g, dtype=D)
    y = torch.sin(5 * X).sum(1)
    hp = Hyperparameters(kernel, np.array([0.2, 0.3]), 1e-3, 0.0, 0.0, 1.0, outputscale=1.3)
    gp = ExactGP.build(hp, X, y, torch.full((600,), 1e-3, dtype=D))
    C = torch.rand(50, 2, generator=g, dtype=D)
    Z = None if case == "variance" else torch.rand(200, 2, generator=g, dtype=D)
    weights = torch.rand(200, generator=g, dtype=D) if case == "weighted" else None
    fant = Fantasies(gp, C, Z, 1e-3, weights=weights)
    for x in torch.rand(3, 2, generator=g, dtype=D):
        fant.condition(x)
    scorer = Scorer("variance" if Z is None else "integrated_variance", fant, noise=1e-3)
    starts = torch.rand(3, 2, generator=g, dtype=D).numpy()
    ls, k = gp.lengthscale, opt.LOCAL_POINTS[0]
    S = torch.as_tensor(starts)
    near = torch.topk(torch.cdist(S / ls, X / ls), k, largest=False)
    batch = LocalGPs.build(gp, S, near, fant)
    assert batch is not None
    x = torch.as_tensor(starts + 0.01).requires_grad_(True)
    values = scorer.rebind(batch).at(x)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(values.sum(), x)
    reach = near.values[:, -1].max()  # the union model's reach, shared by the models
    for j in range(3):
        idx = near.indices[j]
        local = ExactGP.build(hp, X[idx], y[idx], gp.noise[idx])
        Zj, wj = Z, weights
        if Z is not None:
            keep = torch.cdist(Z / ls, S[j:j + 1] / ls)[:, 0] <= reach
            Zj, wj = Z[keep], None if weights is None else weights[keep]
        ref = Fantasies(local, S[j:j + 1], Zj, fant.noise, nz_total=fant.nz_total, weights=wj)
        for xf in fant.Xf:
            ref.condition(xf)
        xj = x[j:j + 1].detach().clone().requires_grad_(True)
        vj = scorer.rebind(ref).at(xj)
        (gj,) = torch.autograd.grad(vj.sum(), xj)
        torch.testing.assert_close(values[j:j + 1].detach(), vj.detach(), rtol=1e-9, atol=0)
        torch.testing.assert_close(grad[j:j + 1], gj, rtol=1e-7,
                                   atol=1e-10 * float(gj.abs().max()))
