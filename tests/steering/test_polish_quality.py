"""The polish must not get worse: its picks against the reference polish, on many states.

The reference is the polish as it was before this work (commit c78424d): one local exact GP
of the union of the starts' neighbourhoods, L-BFGS-B, 8 iterations, relative tolerance 1e-3,
gradients from autograd through the plain posterior formulas (``Fantasies._at``). Both run
on the same engine states (the same candidates and starts); each pick's acquisition value
is the full model's (what ``select`` reports), so a gain or loss is real, not a local
model's. No timing here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from server.steering import hyper
from server.steering import optimize as opt
from server.steering.acquisition import Scorer
from server.steering.engine import GPEngine
from server.steering.gp import DTYPE, Fantasies, Hyperparameters
from server.steering.localgp import LocalGPs
from server.steering.spec import ExperimentSpec, Goal, Output, Parameter

ACQUISITIONS = ("variance", "integrated_variance", "gradient_variance", "ucb", "ei")
STATES = [(seed, 1 + seed % 4, ACQUISITIONS[seed % 5], (1, 4)[seed // 20 % 2])
          for seed in range(40)]
# States whose three starts lie apart, so that the polish takes the per-start local models
# (optimize.local_scorer); found among seeds 100-219, where 18 of 120 variance asks did
STATES += [(seed, 1 + seed % 4, "variance", 1)
           for seed in (106, 117, 126, 130, 133, 138, 165, 181, 198, 217)]
MEAN_GAP_MIN = -1e-3  # the new batches' values, relative to the reference's, on average ...
WORST_GAP_MIN = -0.05  # ... and at worst


def _reference_at(self: Fantasies, x: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    mean, var, cov_z, _ = self._at(x)
    czsq = None if cov_z is None else self._weigh(cov_z.pow(2)) / self.nz_total
    return mean, var, czsq


def _reference_polish(scorer: Scorer, starts: np.ndarray, iters: int = 8,
                      scale: float = 1.0) -> np.ndarray:
    b, d = starts.shape
    unit = 1.0 / max(abs(scale), 1e-300)

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(flat.reshape(b, d), dtype=DTYPE, requires_grad=True)
        total = scorer.at(x).sum()
        (grad,) = torch.autograd.grad(total, x)
        f, g = float(total.detach()) * unit, grad.numpy().reshape(-1) * unit
        if not (np.isfinite(f) and np.isfinite(g).all()):
            return 0.0, np.zeros_like(flat)
        return -f, -g

    res = minimize(fun, starts.reshape(-1), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * (b * d), options={"maxiter": iters, "ftol": 1e-3})
    return np.clip(res.x.reshape(b, d), 0.0, 1.0)


def _state(seed: int, d: int, acq: str) -> tuple[GPEngine, np.ndarray]:
    """A fitted-looking engine: random data on a smooth map, random hyperparameters, N large
    enough for the local model in 3 states out of 4."""
    rng = np.random.default_rng([seed, d])
    goal = Goal.map if acq in ("variance", "integrated_variance", "gradient_variance") \
        else Goal.maximize
    spec = ExperimentSpec(name="q", parameters=tuple(Parameter(f"x{i}", 0.0, 10.0)
                                                     for i in range(d)),
                          outputs=(Output("y"),), goal=goal, acquisition=acq,  # type: ignore[arg-type]
                          kernel=("matern52", "matern32", "rbf")[seed % 3],  # type: ignore[arg-type]
                          initial_design=5, seed=seed)
    local = 3 * opt.LOCAL_POINTS[0 if d <= 2 else 1]
    n = 60 if seed % 4 == 3 else int(rng.integers(local + 50, local + 400))
    U = rng.random((n, d))
    w = rng.normal(size=(d, 3)) * 4.0
    y = np.sin(U @ w).sum(1) + np.exp(-20 * ((U - 0.6) ** 2).sum(1)) \
        + 0.01 * rng.standard_normal(n)
    hp = Hyperparameters(kernel=spec.kernel.value, lengthscale=rng.uniform(0.08, 0.4, d),
                         noise=float(rng.uniform(1e-4, 1e-2)), mean_constant=0.0,
                         y_mean=float(y.mean()), y_std=float(y.std()), fitted_n=n)
    engine = GPEngine(spec, hyperparameters={"y": hyper.to_dict(spec, hp)})
    engine.ingest(10.0 * U, y[:, None])
    pending = 10.0 * rng.random((int(rng.integers(1, 4)), d))
    return engine, pending


def _picks(engine: GPEngine, q: int, pending: np.ndarray) -> list[opt.Pick]:
    captured: list[opt.Pick] = []

    def spy(*args: Any, **kw: Any) -> list[opt.Pick]:
        captured.extend(select(*args, **kw))
        return captured

    select = opt.select
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("server.steering.engine.select", spy)
        engine.suggest(q, pending)
    return captured


def _gap(acq: str, old: list[opt.Pick], new: list[opt.Pick]) -> float:
    """How much better the ``new`` batch is than the ``old``, relative, by the sum of its
    greedy values (for the integrated variances: the batch's total variance reduction);
    ``ei`` values are logs, so their mean difference is the relative gain."""
    a, b = (float(sum(p.value for p in picks)) for picks in (old, new))
    if acq == "ei":
        return (b - a) / len(old)
    return (b - a) / max(abs(a), 1e-12 if acq != "ucb" else 1e-2)


def test_polish_is_no_worse_than_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    per_acq: dict[str, list[float]] = {a: [] for a in ACQUISITIONS}
    per_start: list[int] = []
    build = LocalGPs.build

    def counted(*args: Any) -> LocalGPs | None:
        per_start.append(1)
        return build(*args)

    monkeypatch.setattr(LocalGPs, "build", counted)
    for seed, d, acq, q in STATES:
        engine, pending = _state(seed, d, acq)
        pending = pending if q > 1 else pending[:0]
        new = _picks(engine, q, pending)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Fantasies, "at", _reference_at)
            mp.setattr(opt, "polish", _reference_polish)
            mp.setattr(opt, "LOCAL_PER_START", False)  # one local model of the union
            old = _picks(engine, q, pending)
        assert len(new) == len(old) == q
        per_acq[acq].append(_gap(acq, old, new))
    gaps = [g for v in per_acq.values() for g in v]
    summary = {a: (round(float(np.mean(v)), 6), round(float(np.min(v)), 6))
               for a, v in per_acq.items()}
    print("relative gain of the batches over the reference (mean, worst):", summary,
          f"; {len(per_start)} polishes on per-start local models")
    assert per_start, "no state took the per-start local models"
    assert float(np.mean(gaps)) >= MEAN_GAP_MIN, summary
    assert float(np.min(gaps)) >= WORST_GAP_MIN, summary
