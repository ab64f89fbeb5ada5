"""Acquisition helpers: the stable log expected improvement."""

from __future__ import annotations

import math

import mpmath as mp
import torch

from server.steering.acquisition import log_h


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
