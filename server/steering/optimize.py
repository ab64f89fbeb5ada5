"""Acquisition optimization: dense candidate set, gradient polish, greedy batch selection.

A batch (and every pending point) is handled by sequential greedy selection with kriging
believer fantasies (:class:`~server.steering.gp.Fantasies`), not BoTorch's fantasy models:
those leak memory in gpytorch 1.15.2 (issue #2631) and cost a model copy per fantasy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from server.steering.acquisition import Scorer
from server.steering.design import near_any
from server.steering.gp import DTYPE

MIN_SEPARATION = 1e-3  # normalized distance a new point keeps from pending and chosen ones
N_STARTS = 3  # best candidates polished per pick
POLISH_ITERS = 25  # L-BFGS-B iterations: a short polish, the candidate set did the search


@dataclass(frozen=True)
class Pick:
    """One selected point.

    Args:
        x: ``d`` normalized coordinates.
        value: Acquisition value (standardized units) when it was chosen.
    """

    x: np.ndarray
    value: float


def polish(scorer: Scorer, starts: np.ndarray, iters: int = POLISH_ITERS) -> np.ndarray:
    """Bounded gradient ascent of the acquisition from ``b`` starts at once (L-BFGS-B).

    The starts are independent, so the sum of their values is maximized jointly: one scipy
    call with a ``b * d`` vector, as BoTorch's ``gen_candidates_scipy`` does.

    Args:
        scorer: The acquisition.
        starts: ``b x d`` normalized start points.
        iters: Maximum L-BFGS-B iterations.

    Returns:
        ``b x d`` polished points inside the unit cube.
    """
    b, d = starts.shape

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(flat.reshape(b, d), dtype=DTYPE, requires_grad=True)
        values = scorer.at(x)
        total = values.sum()
        (grad,) = torch.autograd.grad(total, x)
        f, g = float(total.detach()), grad.numpy().reshape(-1)
        if not (np.isfinite(f) and np.isfinite(g).all()):
            return 0.0, np.zeros_like(flat)  # stop: this start's polish will be rejected
        return -f, -g

    res = minimize(fun, starts.reshape(-1), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * (b * d), options={"maxiter": iters})
    return np.clip(res.x.reshape(b, d), 0.0, 1.0)


def polish_iterations(n: int) -> int:
    """L-BFGS-B iterations for ``n`` training points: each costs two O(n^2) solves, so the
    polish shrinks above 2000 points (5 iterations at 5000)."""
    return max(5, min(POLISH_ITERS, int(POLISH_ITERS * (2000 / max(n, 1)) ** 2)))


def select(scorer: Scorer, q: int, pending: np.ndarray,
           forbidden: Callable[[np.ndarray], np.ndarray]) -> list[Pick]:
    """Choose ``q`` points greedily, conditioning on pending and already chosen points.

    Args:
        scorer: The acquisition bound to a fresh :class:`~server.steering.gp.Fantasies`.
        q: Number of points.
        pending: ``p x d`` normalized pending points (conditioned on first).
        forbidden: Maps ``k x d`` normalized points to a boolean mask of forbidden ones.

    Returns:
        Up to ``q`` picks (fewer only if every candidate is excluded).
    """
    fant = scorer.f
    C = fant.C.numpy()
    for p in pending:
        _condition(scorer, p)
    excluded = near_any(C, pending, MIN_SEPARATION)
    picks: list[Pick] = []
    for _ in range(q):
        with torch.no_grad():
            values = scorer.candidates().numpy().copy()
        values[excluded | ~np.isfinite(values)] = -np.inf
        if not np.isfinite(values).any():
            break
        order = np.argsort(-values, kind="stable")[:N_STARTS]
        order = order[np.isfinite(values[order])]
        best_x, best_v = C[order[0]], float(values[order[0]])
        taken = np.array([p.x for p in picks] + list(pending)).reshape(-1, C.shape[1])
        polished = polish(scorer, C[order], polish_iterations(fant.gp.n))
        with torch.no_grad():
            pv = scorer.at(torch.as_tensor(polished, dtype=DTYPE)).numpy()
        ok = (np.isfinite(pv) & ~forbidden(polished)
              & ~near_any(polished, taken, MIN_SEPARATION))
        for x, v, good in zip(polished, pv, ok, strict=True):
            if good and v > best_v:
                best_x, best_v = x, float(v)
        picks.append(Pick(np.asarray(best_x, dtype=np.float64).copy(), best_v))
        _condition(scorer, best_x)
        excluded |= near_any(C, best_x[None, :], MIN_SEPARATION)
    return picks


def _condition(scorer: Scorer, x: np.ndarray) -> None:
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    with torch.no_grad():
        mean, _, _ = scorer.f.at(xt.reshape(1, -1))
        scorer.f.condition(xt)
    scorer.believe(float(mean[0]))
