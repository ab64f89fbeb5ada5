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
from server.steering.gp import DTYPE, ExactGP, Fantasies
from server.steering.localgp import LocalGPs

MIN_SEPARATION = 1e-3  # normalized distance a new point keeps from pending and chosen ones
N_STARTS = 3  # best candidates polished per pick
POLISH_ITERS = 8  # L-BFGS-B iterations: a short polish, the candidate set did the search
POLISH_RTOL = 1e-3  # ... and stop once an iteration gains less than this fraction
LOCAL_POINTS = (128, 256)  # nearest training points per start in the polish's local model,
# for d <= 2 and d > 2
LOCAL_PER_START = True  # one local model per start where it does as well (local_scorer) ...
PER_START_DISJOINT = 0.75  # ... which needs the union of the neighbourhoods to hold this share
# of their points (little overlap)


@dataclass(frozen=True)
class Pick:
    """One selected point.

    Args:
        x: ``d`` normalized coordinates.
        value: Acquisition value (standardized units) when it was chosen.
        mean: Posterior mean at ``x`` (standardized, no fantasies).
        var: Posterior variance at ``x`` (standardized, no fantasies).
        ahead: Whether it is the prepared pick :func:`select` was given.
    """

    x: np.ndarray
    value: float
    mean: float
    var: float
    ahead: bool = False


def polish(scorer: Scorer, starts: np.ndarray, iters: int = POLISH_ITERS,
           scale: float = 1.0) -> np.ndarray:
    """Bounded gradient ascent of the acquisition from ``b`` starts at once (L-BFGS-B).

    The starts are independent, so the sum of their values is maximized jointly: one scipy
    call with a ``b * d`` vector, as BoTorch's ``gen_candidates_scipy`` does.

    Args:
        scorer: The acquisition.
        starts: ``b x d`` normalized start points.
        iters: Maximum L-BFGS-B iterations.
        scale: Size of the summed acquisition at the starts; the objective is divided by
            it, so the polish stops once an iteration gains less than :data:`POLISH_RTOL`
            of it, and gradients of tiny acquisitions (integrated variance) still count.

    Returns:
        ``b x d`` polished points inside the unit cube.
    """
    b, d = starts.shape
    unit = 1.0 / max(abs(scale), 1e-300)  # the objective is O(1): tolerances are relative

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(flat.reshape(b, d), dtype=DTYPE, requires_grad=True)
        values = scorer.at(x)
        total = values.sum()
        (grad,) = torch.autograd.grad(total, x)
        f, g = float(total.detach()) * unit, grad.numpy().reshape(-1) * unit
        if not (np.isfinite(f) and np.isfinite(g).all()):
            return 0.0, np.zeros_like(flat)  # stop: this start's polish will be rejected
        return -f, -g

    res = minimize(fun, starts.reshape(-1), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * (b * d),
                   options={"maxiter": iters, "ftol": POLISH_RTOL})
    return np.clip(res.x.reshape(b, d), 0.0, 1.0)


def local_scorer(scorer: Scorer, starts: np.ndarray) -> Scorer:
    """The acquisition on small exact GPs of the training points nearest to ``starts``.

    The polish only needs the acquisition near its starts, and there the posterior is
    determined by the nearby data (the screening effect of Matern/RBF kernels): a local
    model of :data:`LOCAL_POINTS` points per start (nearest in lengthscale units), conditioned on
    the same fantasies, makes each L-BFGS-B evaluation O(k^2) instead of two O(N^2) solves
    against the full factor. Without fantasies and integration points each start gets a
    model of its own (:class:`~server.steering.localgp.LocalGPs`), else one model holds the
    union of the neighbourhoods. Its result is only a proposal: :func:`select` scores the polished
    points with the full model and keeps a candidate unless they are better.

    Args:
        scorer: The acquisition on the full posterior.
        starts: ``b x d`` normalized start points.

    Returns:
        ``scorer`` itself when the data are small, else a scorer on the local model.
    """
    f = scorer.f
    gp = f.gp
    k = LOCAL_POINTS[0] if gp.X.shape[1] <= 2 else LOCAL_POINTS[1]
    if gp.n <= 3 * k:
        return scorer
    S = torch.as_tensor(starts, dtype=DTYPE)
    dist = torch.cdist(S / gp.lengthscale, gp.X / gp.lengthscale)  # b x N
    near = torch.topk(dist, k, largest=False)
    idx = near.indices.reshape(-1).unique()
    if (LOCAL_PER_START and not f.n_fantasies and f.Z is None
            and len(idx) >= PER_START_DISJOINT * near.indices.numel()):
        # Neighbourhoods that barely overlap, and an acquisition of a start that depends on
        # its own neighbourhood only (no fantasies, no integration points): one model per
        # start costs up to 9x less than one of the union, and its picks were as good
        # (tests/steering/test_polish_quality.py). Elsewhere per-start models did worse on
        # some states of that check (-59% on one ei ask whose neighbourhoods overlapped by
        # 40%, -18% on an integrated-variance ask, -3 to -13% on q=4 batches), and with
        # much overlap they would not save anything: the union model stays there.
        models = LocalGPs.build(gp, S, near, f)
        if models is not None:
            return scorer.rebind(models)  # type: ignore[arg-type]
    # One model of the union of the neighbourhoods (also when a factor above needed jitter)
    local = ExactGP.build(gp.hp, gp.X[idx], gp.y[idx], gp.noise[idx])
    Z, weights = f.Z, f.weights
    if Z is not None:  # only integration points the local data cover: beyond them the local
        # model would see prior covariances that the full data screen off
        reach = near.values[:, -1].max()
        zd = torch.cdist(Z / gp.lengthscale, S / gp.lengthscale).min(1).values
        Z = Z[zd <= reach]
        weights = None if weights is None else weights[zd <= reach]
    lf = Fantasies(local, S, Z, f.noise, nz_total=f.nz_total, weights=weights)
    for x in f.Xf:
        lf.condition(x)
    return scorer.rebind(lf)


def select(scorer: Scorer, q: int, pending: np.ndarray,
           forbidden: Callable[[np.ndarray], np.ndarray],
           ahead: np.ndarray | None = None) -> list[Pick]:
    """Choose ``q`` points greedily, conditioning on pending and already chosen points.

    Args:
        scorer: The acquisition bound to a fresh :class:`~server.steering.gp.Fantasies`.
        q: Number of points.
        pending: ``p x d`` normalized pending points (conditioned on first).
        forbidden: Maps ``k x d`` normalized points to a boolean mask of forbidden ones.
        ahead: ``d`` normalized point prepared for this ask before the last measurements
            changed the acquisition (``q = 1``): it is the pick, unpolished, if it is at
            least every candidate (``Pick.ahead``); else the selection goes on as without
            it, from the same candidate scan.

    Returns:
        Up to ``q`` picks (fewer only if every candidate is excluded).
    """
    if ahead is not None and q != 1:
        raise ValueError("a prepared pick stands for an ask of one point")
    fant = scorer.f
    C = fant.C.numpy()
    excluded = _condition_on_pending(scorer, pending)
    picks: list[Pick] = []
    for i in range(q):
        values = _candidate_values(scorer, excluded)
        if ahead is not None and (kept := _kept(scorer, ahead, values)) is not None:
            return [kept]
        if not np.isfinite(values).any():
            break
        order = np.argsort(-values, kind="stable")[:N_STARTS]
        order = order[np.isfinite(values[order])]
        best_x, best_v = C[order[0]], float(values[order[0]])
        best_mv = float(fant.mean[order[0]]), float(fant.var0[order[0]])
        taken = np.array([p.x for p in picks] + list(pending)).reshape(-1, C.shape[1])
        with torch.no_grad():
            local = local_scorer(scorer, C[order])
        polished = polish(local, C[order], scale=float(np.abs(values[order]).sum()))
        with torch.no_grad():  # the full model has the last word (and memoizes the solve)
            pt = torch.as_tensor(polished, dtype=DTYPE)
            pv = scorer.at(pt).numpy()
            pm, pvar = fant.unconditioned(pt)
        ok = (np.isfinite(pv) & ~forbidden(polished)
              & ~near_any(polished, taken, MIN_SEPARATION))
        for r, (x, v, good) in enumerate(zip(polished, pv, ok, strict=True)):
            if good and v > best_v:
                best_x, best_v, best_mv = x, float(v), (float(pm[r]), float(pvar[r]))
        picks.append(Pick(np.asarray(best_x, dtype=np.float64).copy(), best_v, *best_mv))
        excluded |= near_any(C, best_x[None, :], MIN_SEPARATION)
        if i + 1 < q:  # the last pick conditions nothing
            _condition(scorer, best_x)
    return picks


def _kept(scorer: Scorer, x: np.ndarray, values: np.ndarray) -> Pick | None:
    """``x`` as a pick if its acquisition is at least every candidate's ``values``."""
    with torch.no_grad():
        xt = torch.as_tensor(x[None, :], dtype=DTYPE)
        value = float(scorer.at(xt)[0])
        if not np.isfinite(value) or (np.isfinite(values).any() and value < values.max()):
            return None
        mean, var = scorer.f.unconditioned(xt)
    return Pick(np.asarray(x, dtype=np.float64).copy(), value, float(mean[0]), float(var[0]),
                ahead=True)


def _condition_on_pending(scorer: Scorer, pending: np.ndarray) -> np.ndarray:
    """Condition on every pending point; returns the mask of candidates too close to one."""
    for p in pending:
        _condition(scorer, p)
    return near_any(scorer.f.C.numpy(), pending, MIN_SEPARATION)


def _candidate_values(scorer: Scorer, excluded: np.ndarray) -> np.ndarray:
    """The acquisition on the candidate set, ``-inf`` where excluded or not finite."""
    with torch.no_grad():
        values = scorer.candidates().numpy().copy()
    values[excluded | ~np.isfinite(values)] = -np.inf
    return values


def _condition(scorer: Scorer, x: np.ndarray) -> None:
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    with torch.no_grad():
        mean = scorer.f.condition(xt)
    scorer.believe(mean)
