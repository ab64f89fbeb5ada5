"""The GP steering engine of one experiment: ingest, suggest, posterior, background refit.

Thread safety: one lock guards the data and the per-output posteriors. Posteriors
(:class:`~server.steering.gp.ExactGP`) are immutable, so ``suggest`` and ``posterior`` take
references under the lock and compute without it; ``ingest`` swaps in an extended posterior
under the lock (O(N^2 k)); ``refit`` fits on a snapshot with no lock held, and only swaps the
result in under it. Refits are serialized by a second lock.

Posteriors: up to ``local_above`` points (default :data:`LOCAL_ABOVE`) an output's posterior is
the exact GP; above, exact GPs on overlapping tiles of the domain
(:class:`~server.steering.local.TiledGP`), used only when they pass an accuracy check against
an exact GP on a larger neighbourhood. The target output's posterior also keeps the posterior
at a fixed candidate set up to date (:class:`~server.steering.gp.PointCache`), so an ask
starts from cached values.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from server.steering import design, fit, hyper
from server.steering.acquisition import (
    INTEGRATED,
    Scorer,
    effective_acquisition,
    gradient_weights,
    misfit_weights,
)
from server.steering.errors import InvalidInput, InvalidMeasurement
from server.steering.gp import DTYPE, NOISE_FLOOR, ExactGP, Fantasies, Hyperparameters
from server.steering.local import CAP, CHECK_TOLERANCE, LEAF, TiledFantasies, TiledGP
from server.steering.optimize import select
from server.steering.planner import order_for_travel
from server.steering.spec import MAX_BATCH, ExperimentSpec, Goal
from server.steering.types import Candidate, MapError, ModelStatus, OutputStatus, Posterior

MIN_FIT_POINTS = 3  # an output is fitted once it has this many measurements
MAX_FIT_POINTS = 1500  # above this, hyperparameters are fitted on a seeded random subset
# integration points of the integrated variances: INTEGRATION_BASE * 2^min(d, 3), at most
# INTEGRATION_MAX: 1024 in 2-D, 2048 in 3-D and 4-D (lower RMSE per measurement on the
# validation maps than 4x fewer; benchmarks/README.md, "Third pass"). An ask's cost grows
# with points x N, so a model built on more than INTEGRATION_DENSE_UP_TO measurements uses
# 4x fewer (256 / 512, the sparser set of the second pass): at N = 5,000 in 4-D the dense
# set doubled a q=4 map ask (339 -> 668 ms), while the accuracy per measurement it buys
# matters most in the first few hundred.
INTEGRATION_BASE = 256
INTEGRATION_MAX = 2048
INTEGRATION_DENSE_UP_TO = 2000
REFIT_GROWTH = 0.25  # a refit is due once an output's data grew by this fraction ...
REFIT_MIN_STEP = 3  # ... or by this many points, whichever is more
WARM_START_MIN = 200  # refits start from the last hyperparameters once fitted on this many
WARM_MAXITER = 50  # L-BFGS-B iterations of a warm-started fit (it starts near the optimum)
LOCAL_ABOVE = 6000  # above this many points an output's posterior is tiled (server.steering.local)
EXACT_MAX = 12000  # ... unless the tiles fail their accuracy check and N is at most this
TILE_MEMORY = 2.5 * 2**30  # bytes of tile factors that growing failed tiles may take
CANDIDATE_SEED = 104729  # the candidate set is fixed per spec, so its posterior is cached
REFIT_NICE = 10  # refits run on worker threads this much nicer than the asks (Linux)
REFIT_WORKERS = 2
# Acquisitions whose picks an ask can take from :meth:`GPEngine.prepare` (computed while the
# last suggestion was being measured, with it pending): those whose picks depend only on
# where the measurements are, not on what they read ...
AHEAD_ACQUISITIONS = ("variance", "integrated_variance")
# ... and those that weight by the values (misfit/gradient_variance), for one pick at a time,
# if the pick still beats every candidate under the weights of the new values: taken
# unchecked, picks one measurement behind cost 1.4% RMSE on the autonomy benchmark
# (landscape-4d 5%; benchmarks/README.md, "Ask lookahead"). ei and ucb follow the values.
AHEAD_CHECKED = ("gradient_variance", "misfit_variance")
AHEAD_TOLERANCE = 1e-3  # a measured position is its pending suggestion within this (unit cube)
AHEAD_NOISE = 2.0  # ... and its noise variance the learned one within this factor (or unknown)
PREDICT_ENTRIES = 2_000_000  # N x chunk entries per posterior chunk: 16 MB, under malloc's mmap


_refit_pool: ThreadPoolExecutor | None = None
_refit_pool_lock = threading.Lock()


def background_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread), so that a refit
    yields the CPU (2 cores here) and memory bandwidth to asks; best effort."""
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REFIT_NICE)
        except OSError:
            pass


def _refit_executor() -> ThreadPoolExecutor:
    """The process-wide pool of low-priority refit threads (created on first use)."""
    global _refit_pool
    with _refit_pool_lock:
        if _refit_pool is None:
            _refit_pool = ThreadPoolExecutor(REFIT_WORKERS, thread_name_prefix="gp-refit",
                                             initializer=background_priority)
        return _refit_pool


@dataclass
class _Output:
    """Mutable bookkeeping of one output's GP (guarded by the engine's lock)."""

    name: str
    hp: Hyperparameters | None = None
    gp: ExactGP | TiledGP | None = None
    failures: int = 0
    failed_at_n: int | None = None  # measurements at the last failed fit, None after success
    last_error: str | None = None
    last_fit_at: float | None = None
    last_fit_seconds: float | None = None


@dataclass(frozen=True)
class _Ahead:
    """Picks computed by :meth:`GPEngine.prepare`, and the state they were computed on."""

    q: int
    hp: Hyperparameters  # the target posterior's (a refit makes a new object)
    points: torch.Tensor  # its candidate and integration points (a rebuild may change them)
    n_target: int  # the target's measured rows then, all in it (the engine only appends)
    pending: np.ndarray  # unit-cube positions conditioned on as pending
    U: np.ndarray
    values: list[float | None]
    source: str
    w: torch.Tensor  # L^{-1} K(X, U) on that posterior: the ask's posterior at U grows it
    # ... if the posterior still has the same factor base; held weakly: a merged or rebuilt
    # factor's old base (N x N) must not stay in memory for it
    base: weakref.ref[torch.Tensor]


class GPEngine:
    """One experiment's GP models (one independent exact GP per output) and acquisition.

    Above ``local_above`` points an output's posterior is a :class:`~server.steering.local.
    TiledGP` (exact GPs on overlapping tiles), built only if it passes its accuracy check
    against an exact GP on a larger neighbourhood; otherwise (up to :data:`EXACT_MAX` points)
    the exact GP is kept.

    Args:
        spec: The experiment spec.
        hyperparameters: Warm start, as returned by :meth:`hyperparameters` (e.g. after a
            restart): ``{output: {...} | None}``.
        local_above: Number of points above which tiles replace the exact GP.

    Raises:
        InvalidInput: Malformed warm-start hyperparameters.
    """

    def __init__(self, spec: ExperimentSpec, *,
                 hyperparameters: dict[str, Any] | None = None,
                 local_above: int = LOCAL_ABOVE) -> None:
        self.spec = spec
        self._local_above = local_above
        d, m = spec.dim, len(spec.outputs)
        self._lock = threading.Lock()
        self._refit_lock = threading.Lock()
        self._refitting = False
        self._n = 0
        self._X = np.empty((64, d))
        self._Y = np.empty((64, m))
        self._Yvar = np.empty((64, m))
        self._outputs = [_Output(o.name) for o in spec.outputs]
        self._target = spec.output_names.index(spec.target)  # type: ignore[arg-type]
        self._points = self._candidate_points(dense=True)
        self._points_large_n: tuple[torch.Tensor, int] | None = None  # made when first needed
        self._points_once = threading.Lock()  # ... by one thread (refits and asks race there)
        self._ahead: _Ahead | None = None  # see prepare()
        for name, data in (hyperparameters or {}).items():
            if name not in spec.output_names:
                raise InvalidInput(f"hyperparameters.{name}", "unknown output")
            if data is not None:
                self._outputs[spec.output_names.index(name)].hp = hyper.from_dict(
                    spec, data, f"hyperparameters.{name}")

    def _candidate_points(self, dense: bool) -> tuple[torch.Tensor, int]:
        """``(P, M)``: the fixed candidate set (``M`` allowed scrambled-Sobol points, denser
        in higher d) followed by the integration points of the integrated variances (4x
        fewer unless ``dense``; see :data:`INTEGRATION_DENSE_UP_TO`). The target output's
        posterior keeps a :class:`~server.steering.gp.PointCache` there."""
        spec, d = self.spec, self.spec.dim
        M = min(2048, 256 * 2 ** min(d, 3))
        C = design.allowed_sobol(spec, M, design.mix_seed(spec.seed, CANDIDATE_SEED))
        parts = [C]
        if effective_acquisition(spec) in INTEGRATED:
            Nz = min(INTEGRATION_MAX, INTEGRATION_BASE * 2 ** min(d, 3))
            if not dense:
                Nz //= 4
            parts.append(design.allowed_sobol(spec, Nz, design.mix_seed(spec.seed, 7919)))
        return torch.as_tensor(np.vstack(parts), dtype=DTYPE), len(C)

    def _points_for(self, n: int) -> tuple[torch.Tensor, int]:
        """The candidate and integration points of a posterior built on ``n`` points (the
        sparser integration set above :data:`INTEGRATION_DENSE_UP_TO`; a posterior keeps
        its points as it grows by ingests, and the next refit builds on the right set)."""
        if n <= INTEGRATION_DENSE_UP_TO:
            return self._points
        with self._points_once:
            if self._points_large_n is None:
                self._points_large_n = self._candidate_points(dense=False)
            return self._points_large_n

    def _build(self, j: int, hp: Hyperparameters, Xt: torch.Tensor, yt: torch.Tensor,
               nt: torch.Tensor) -> ExactGP | TiledGP:
        """Output ``j``'s posterior from scratch: tiled above ``local_above`` points if the
        tiles pass their accuracy check (grown while they fail it, within
        :data:`TILE_MEMORY`), else exact up to :data:`EXACT_MAX` points, else the largest
        tiles."""
        n = len(Xt)
        points = self._points_for(n) if j == self._target else None
        if n <= self._local_above:
            return ExactGP.build(hp, Xt, yt, nt, points)
        leaf, cap = LEAF, CAP
        seed = design.mix_seed(self.spec.seed, n, j)
        while True:
            tiled = TiledGP.build(hp, Xt, yt, nt, points, leaf=leaf, cap=cap).checked(seed)
            assert tiled.check_error is not None
            if tiled.check_error <= CHECK_TOLERANCE:
                return tiled
            leaf, cap = 2 * leaf, 2 * cap  # twice the reach: 4x the memory
            if cap >= n or TiledGP.factor_bytes(Xt, hp, leaf, cap) > TILE_MEMORY:
                break
            del tiled  # before the larger one is built
        return ExactGP.build(hp, Xt, yt, nt, points) if n <= EXACT_MAX else tiled

    def model_info(self) -> dict[str, dict[str, Any] | None]:
        """Which posterior each output uses: ``{"kind": "exact" | "tiled", "n": ...,
        "tiles": ..., "check_error": ...}`` (``None`` without a model)."""
        with self._lock:
            gps = [(o.name, o.gp) for o in self._outputs]
        out: dict[str, dict[str, Any] | None] = {}
        for name, gp in gps:
            if gp is None:
                out[name] = None
            elif isinstance(gp, TiledGP):
                out[name] = {"kind": "tiled", "n": gp.n, "tiles": gp.n_tiles,
                             "largest_tile": max(g.n for g in gp.gps),
                             "check_error": gp.check_error}
            else:
                out[name] = {"kind": "exact", "n": gp.n}
        return out

    # --- data -------------------------------------------------------------------------------

    def ingest(self, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None = None) -> None:
        """Add measurements and update each output's posterior incrementally (no refit).

        Args:
            X: ``n x d`` positions in spec units, axis order.
            Y: ``n x m`` values in output order; NaN where an output was not measured.
            Yvar: ``n x m`` known noise variances (output units); NaN (or ``None``) where
                unknown, so the output's learned noise is used.

        Raises:
            InvalidMeasurement: Wrong shapes, non-finite positions, negative variances.
        """
        X, Y, Yvar = self._check_data(X, Y, Yvar)
        with self._lock:
            n, k = self._n, X.shape[0]
            if n + k > self._X.shape[0]:
                cap = max(2 * self._X.shape[0], n + k)
                for attr in ("_X", "_Y", "_Yvar"):
                    old = getattr(self, attr)
                    new = np.empty((cap, old.shape[1]))
                    new[:n] = old[:n]
                    setattr(self, attr, new)
            self._X[n:n + k], self._Y[n:n + k], self._Yvar[n:n + k] = X, Y, Yvar
            self._n = n + k
            for j, out in enumerate(self._outputs):
                if out.hp is not None:
                    self._update(j, out, out.gp)

    def _check_data(self, X: np.ndarray, Y: np.ndarray,
                    Yvar: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d, m = self.spec.dim, len(self.spec.outputs)
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != d:
            raise InvalidMeasurement("X", f"must have shape n x {d}, got {X.shape}")
        if Y.shape != (X.shape[0], m):
            raise InvalidMeasurement("Y", f"must have shape {(X.shape[0], m)}, got {Y.shape}")
        Yvar = np.full_like(Y, np.nan) if Yvar is None else np.asarray(Yvar, dtype=np.float64)
        if Yvar.shape != Y.shape:
            raise InvalidMeasurement("Yvar", f"must have shape {Y.shape}, got {Yvar.shape}")
        if not np.isfinite(X).all():
            raise InvalidMeasurement("X", "positions must be finite")
        if np.isinf(Y).any():
            raise InvalidMeasurement("Y", "values must be finite (NaN = not measured)")
        if np.isinf(Yvar).any() or (Yvar < 0).any():
            raise InvalidMeasurement("Yvar", "variances must be finite and >= 0 (NaN = unknown)")
        return X, Y, Yvar

    def _rows(self, j: int, n: int | None = None) -> np.ndarray:
        """Row indices (of the first ``n`` rows) where output ``j`` was measured."""
        n = self._n if n is None else n
        return np.flatnonzero(~np.isnan(self._Y[:n, j]))

    def _training(self, j: int, hp: Hyperparameters, rows: np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model-space ``(X n x d, y n, noise n)`` of output ``j`` at ``rows``."""
        U = design.to_unit(self.spec, self._X[rows])
        y = (self._Y[rows, j] - hp.y_mean) / hp.y_std
        var = self._Yvar[rows, j]
        noise = np.where(np.isnan(var), hp.noise, np.maximum(var / hp.y_std**2, NOISE_FLOOR))
        return (torch.as_tensor(U, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE),
                torch.as_tensor(noise, dtype=DTYPE))

    def _update(self, j: int, out: _Output, gp: ExactGP | TiledGP | None) -> None:
        """Bring ``gp`` (built on a prefix of output ``j``'s rows) up to date; lock held.

        An exact posterior that outgrew twice ``local_above`` (no refit switched it to tiles
        meanwhile) is rebuilt from scratch here."""
        assert out.hp is not None
        rows = self._rows(j)
        start = 0 if gp is None else gp.n
        if start == len(rows):
            out.gp = gp
            return
        if isinstance(gp, ExactGP) and len(rows) > 2 * self._local_above:
            gp, start = None, 0
        try:
            Xt, yt, nt = self._training(j, out.hp, rows[start:])
            out.gp = self._build(j, out.hp, Xt, yt, nt) if gp is None else gp.extend(Xt, yt, nt)
        except (RuntimeError, ValueError) as e:  # LinAlgError is a RuntimeError
            out.gp, out.last_error = gp, f"posterior update failed: {e}"

    # --- refit ------------------------------------------------------------------------------

    def needs_refit(self) -> bool:
        """Whether a refit is due: an output's first fit (>= 3 points), or its data grew by
        ``max(REFIT_MIN_STEP, REFIT_GROWTH)`` (3 points, 25%) since the last fit; after a
        failed fit, only once more data arrived.
        ``False`` while a refit runs."""
        with self._lock:
            if self._refitting:
                return False
            for j, out in enumerate(self._outputs):
                nj = len(self._rows(j))
                if nj < MIN_FIT_POINTS or (out.failed_at_n is not None and nj <= out.failed_at_n):
                    continue
                fitted = 0 if out.hp is None else out.hp.fitted_n
                if out.hp is None or nj >= fitted + max(REFIT_MIN_STEP,
                                                       math.ceil(REFIT_GROWTH * fitted)):
                    return True
            return False

    def refit(self) -> ModelStatus:
        """Refit the hyperparameters of every output with >= 3 points; never raises.

        Fits on a snapshot without holding the lock (above :data:`MAX_FIT_POINTS` points on a
        random subset seeded by ``(spec.seed, N, output)``; starting from the last
        hyperparameters once they were fitted on :data:`WARM_START_MIN` points), then swaps
        the new hyperparameters
        in and rebuilds each posterior on all data, including rows that arrived meanwhile. A
        failed fit keeps the previous model and counts in ``fit_failures``.

        The work runs on a low-priority worker thread (:data:`REFIT_NICE`) while the caller
        waits, so that asks answered meanwhile on other threads get the CPU first.

        Returns:
            The status after the refit.
        """
        return _refit_executor().submit(self._refit).result()

    def _refit(self) -> ModelStatus:
        with self._refit_lock:
            with self._lock:
                self._refitting = True
                n = self._n
                X, Y, Yvar = self._X[:n].copy(), self._Y[:n].copy(), self._Yvar[:n].copy()
            try:
                for j, out in enumerate(self._outputs):
                    self._refit_output(j, out, X, Y[:, j], Yvar[:, j])
            finally:
                with self._lock:
                    self._refitting = False
        return self.status()

    def _refit_output(self, j: int, out: _Output, X: np.ndarray, y: np.ndarray,
                      yvar: np.ndarray) -> None:
        rows = np.flatnonzero(~np.isnan(y))
        if len(rows) < MIN_FIT_POINTS:
            return
        t0 = time.perf_counter()
        try:
            fit_rows = rows
            if len(rows) > MAX_FIT_POINTS:
                rng = np.random.default_rng(design.mix_seed(self.spec.seed, len(X), j))
                fit_rows = np.sort(rng.choice(rows, MAX_FIT_POINTS, replace=False))
            known = bool(np.isfinite(yvar[fit_rows]).all())
            with self._lock:
                init = out.hp
            warm = init is not None and init.fitted_n >= WARM_START_MIN
            hp = fit.fit_hyperparameters(
                design.to_unit(self.spec, X[fit_rows]), y[fit_rows],
                yvar[fit_rows] if known else None, self.spec.kernel.value,  # type: ignore[union-attr]
                seed=design.mix_seed(self.spec.seed, len(X), j),
                lengthscale_prior=(fit.MAP_LENGTHSCALE_PRIOR if self.spec.goal == Goal.map
                                   else fit.BOTORCH_LENGTHSCALE_PRIOR),
                **({"init": init, "maxiter": WARM_MAXITER} if warm else {}))
            hp = replace(hp, fitted_n=len(rows))
            with self._lock:
                Xt, yt, nt = self._training(j, hp, rows)
            gp = self._build(j, hp, Xt, yt, nt)  # O(N^3), outside the lock
        except Exception as e:  # noqa: BLE001 - a bad fit must never take the experiment down
            with self._lock:
                out.failures += 1
                out.failed_at_n = len(rows)
                out.last_error = f"{type(e).__name__}: {e}"[:500]
            return
        with self._lock:
            out.hp, out.failed_at_n, out.last_error = hp, None, None
            out.last_fit_at, out.last_fit_seconds = time.time(), time.perf_counter() - t0
            self._update(j, out, gp)  # adds the rows that arrived during the fit

    # --- suggest ----------------------------------------------------------------------------

    def suggest(self, q: int, pending: np.ndarray | None = None,
                start: np.ndarray | None = None) -> list[Candidate]:
        """Propose ``q`` positions, ordered for short motor travel; never waits for a refit.

        The scrambled-Sobol initial design runs while measured + pending points are fewer
        than ``spec.initial_design``, or the target output has fewer than 3 measurements or
        no fitted model yet; then the spec's acquisition of the target output is maximized,
        greedily for ``q > 1``, conditioning on pending and chosen points (kriging believer).
        If :meth:`prepare` already computed the picks for this state, they are taken from
        there (``Candidate.ahead``) and only the posterior at them is computed now.

        Args:
            q: Number of positions, ``1 <= q <= 100``.
            pending: ``p x d`` positions (spec units) suggested but not measured yet.
            start: ``d`` current motor position; defaults to the last measured position.

        Returns:
            Up to ``q`` candidates (fewer only when the allowed region runs out of distinct
            points).

        Raises:
            InvalidInput: Bad ``q``, ``pending`` or ``start``.
        """
        P = self._check_ask(q, pending)
        with self._lock:
            n = self._n
            measured = self._X[:n].copy()
            rows = self._rows(self._target)
            gp, ahead = self._outputs[self._target].gp, self._ahead
            # noise variances of the target rows measured since picks were prepared
            noise = (self._Yvar[rows[ahead.n_target:], self._target].copy()
                     if ahead is not None else np.zeros(0))
        if start is None and n:
            start = measured[-1]
        P_unit = design.to_unit(self.spec, P)
        known: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        from_ahead = False
        if gp is None or self._initial_phase(n + len(P), len(rows)):
            taken = np.vstack([design.to_unit(self.spec, measured), P_unit])
            U = design.initial_design(self.spec, q, taken)
            values: list[float | None] = [None] * len(U)
            source = "initial_design"
        else:
            if ahead is not None and not self._still_ahead(ahead, q, gp, measured[rows],
                                                           noise, P_unit):
                ahead = None
            if ahead is not None and effective_acquisition(self.spec) in AHEAD_ACQUISITIONS:
                U, values, source, from_ahead = ahead.U, ahead.values, ahead.source, True
                assert isinstance(gp, ExactGP)  # _still_ahead
                with torch.no_grad():
                    grown = gp.predict_grown(torch.as_tensor(U, dtype=DTYPE), ahead.w,
                                             ahead.base())
                if grown is not None:  # the target's posterior at the picks, from the prepare
                    mean, var = grown
                    known[self._target] = (mean.numpy() * gp.hp.y_std + gp.hp.y_mean,
                                           var.sqrt().numpy() * gp.hp.y_std)
            else:  # AHEAD_CHECKED: the selection tries the prepared pick first
                U, values, source, stats, from_ahead = self._acquire(gp, q, P_unit, n, ahead)
                known[self._target] = stats
        X = design.from_unit(self.spec, U)
        order = order_for_travel(X, [p.speed for p in self.spec.parameters],
                                 start=start, bounds=self.spec.bounds)
        order = np.asarray(order, dtype=int)
        post = self._posterior(X[order], {j: (m[order], s[order]) for j, (m, s)
                                          in known.items()}) if len(order) else None
        result = []
        for i, idx in enumerate(order):
            mean = {k: float(v[i]) for k, v in post.mean.items() if np.isfinite(v[i])}
            std = {k: float(post.std[k][i]) for k in mean}
            result.append(Candidate(x=X[idx].tolist(), mean=mean, std=std,
                                    acquisition=values[idx], source=source, ahead=from_ahead))
        return result

    def prepare(self, q: int, pending: np.ndarray | None = None) -> bool:
        """Compute now the picks of the ask that will follow the pending measurements.

        Meant for the time a beamline spends measuring the last suggestions: called with
        them pending, it lets the next :meth:`suggest` with the same ``q`` skip the
        acquisition, if in between those suggestions were measured (each within
        :data:`AHEAD_TOLERANCE` of its position in the unit cube, the target output
        among the values, its noise variance unknown or within :data:`AHEAD_NOISE` of the
        learned one) or are still pending, nothing else was measured or suggested, and
        the posterior only grew (no refit, no rebuild, no failed update). Otherwise the
        ask computes as usual.

        The picks are those of an ask with the measurements still pending. For the
        acquisitions in :data:`AHEAD_ACQUISITIONS` (``variance``, ``integrated_variance``)
        the posterior variance does not depend on the measured values, so they equal the
        ask's own picks. Those in :data:`AHEAD_CHECKED` (``misfit_variance``,
        ``gradient_variance``) weight by the values: they are prepared for ``q = 1`` only,
        and the ask takes the pick only if it still beats every candidate under the
        weights of the new values. ``ei`` and ``ucb`` follow the values: nothing is
        prepared for them.

        Args:
            q: The next ask's number of positions.
            pending: ``p x d`` positions (spec units) suggested and not measured yet.

        Returns:
            Whether picks were prepared: not for other acquisitions (or ``q > 1`` of the
            checked ones), without a fitted model, while the initial design runs, when a
            measured row is missing from the model, or on a tiled posterior (above
            ``local_above`` points), where a pending point's fantasy and its measurement
            reach the tiles differently and the picks differ.

        Raises:
            InvalidInput: Bad ``q`` or ``pending``.
        """
        P = self._check_ask(q, pending)
        kind = effective_acquisition(self.spec)
        if kind not in AHEAD_ACQUISITIONS and (kind not in AHEAD_CHECKED or q != 1):
            return False
        with self._lock:
            n = self._n
            n_target = len(self._rows(self._target))
            gp = self._outputs[self._target].gp
        if (gp is None or isinstance(gp, TiledGP) or gp.n != n_target
                or self._initial_phase(n + len(P), n_target)):
            return False  # (gp.n < n_target: a failed update left a row out of the model)
        P_unit = design.to_unit(self.spec, P)
        U, values, source, _, _ = self._acquire(gp, q, P_unit, n)
        assert gp.cache is not None  # the target's exact posterior always keeps one
        with torch.no_grad():
            w = gp.chol.solve(gp.k(gp.X, torch.as_tensor(U, dtype=DTYPE)))
        ahead = _Ahead(q, gp.hp, gp.cache.P, n_target, P_unit, U, values, source, w,
                       weakref.ref(gp.chol.base))
        with self._lock:
            self._ahead = ahead
        return True

    def _check_ask(self, q: int, pending: np.ndarray | None) -> np.ndarray:
        """Validated ``q`` and pending positions (``p x d``, spec units)."""
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= MAX_BATCH:
            raise InvalidInput("q", f"must be an integer in [1, {MAX_BATCH}]")
        d = self.spec.dim
        P = np.zeros((0, d)) if pending is None else np.asarray(pending, dtype=np.float64)
        if P.ndim != 2 or P.shape[1] != d or not np.isfinite(P).all():
            raise InvalidInput("pending", f"must be a finite p x {d} array")
        return P

    def _initial_phase(self, n_taken: int, n_target: int) -> bool:
        """Whether the initial design still runs (``n_taken``: measured + pending)."""
        return n_taken < self.spec.initial_design or n_target < MIN_FIT_POINTS

    def _still_ahead(self, ahead: _Ahead, q: int, gp: ExactGP | TiledGP,
                     X_target: np.ndarray, noise: np.ndarray, P_unit: np.ndarray) -> bool:
        """Whether ``ahead`` was prepared for this ask: the same ``q``; the posterior grew
        from the one it was computed on by exactly the target's rows measured since (the
        same hyperparameters and point set, all rows in it, still exact); those rows'
        noise variances (``noise``) unknown or within :data:`AHEAD_NOISE` of the learned one (their
        fantasies had the learned one); and those rows plus the pending positions are,
        one to one, the positions it took as pending."""
        if (ahead.q != q or not isinstance(gp, ExactGP) or gp.hp is not ahead.hp
                or gp.cache is None or gp.cache.P is not ahead.points
                or gp.n != len(X_target) or len(X_target) < ahead.n_target):
            return False
        var = noise[~np.isnan(noise)] / gp.hp.y_std**2  # model units, as _training has it
        ratio = np.maximum(var, NOISE_FLOOR) / gp.hp.noise
        if ((ratio > AHEAD_NOISE) | (ratio < 1 / AHEAD_NOISE)).any():
            return False
        now = np.vstack([design.to_unit(self.spec, X_target[ahead.n_target:]), P_unit])
        if len(now) != len(ahead.pending):
            return False
        free = np.ones(len(ahead.pending), dtype=bool)
        for u in now:
            close = free & (np.abs(ahead.pending - u).max(axis=1) <= AHEAD_TOLERANCE)
            if not close.any():
                return False
            free[np.argmax(close)] = False
        return True

    def _scorer(self, gp: ExactGP | TiledGP, n: int) -> Scorer:
        """The spec's acquisition on ``gp``, bound to fresh fantasies (the weights of the
        integrated variances from the current mean and measurements)."""
        spec, kind = self.spec, effective_acquisition(self.spec)
        hp = gp.hp
        with torch.no_grad():
            fant: Fantasies | TiledFantasies
            if isinstance(gp, TiledGP):
                fant = gp.fantasies(hp.noise)
            elif gp.cache is not None:
                weights = None
                if kind == "gradient_variance" and gp.cache.cross is not None:
                    weights = gradient_weights(gp, gp.cache.P[gp.cache.M:])
                elif kind == "misfit_variance" and gp.cache.cross is not None:
                    weights = misfit_weights(
                        gp, gp.cache.P[gp.cache.M:], mean=gp.cache.mean[gp.cache.M:],
                        nearest=None if gp.cache.nearest is None else gp.cache.nearest[0])
                fant = Fantasies.from_cache(gp, hp.noise, weights=weights)
            else:  # not reached by the engine (the target always has a cache); kept for safety
                P, M = self._points_for(n)
                fant = Fantasies(gp, P[:M], P[M:] if len(P) > M else None, hp.noise)
            train_mean = gp.mean_at_train() if kind == "ei" else None
        maximize = spec.goal != Goal.minimize
        best = 0.0
        if train_mean is not None:
            best = float(train_mean.max() if maximize else train_mean.min())
        return Scorer(kind, fant, maximize=maximize, beta=spec.ucb_beta, best=best,
                      noise=hp.noise)

    def _acquire(self, gp: ExactGP | TiledGP, q: int, P_unit: np.ndarray, n: int,
                 ahead: _Ahead | None = None
                 ) -> tuple[np.ndarray, list[float | None], str,
                            tuple[np.ndarray, np.ndarray], bool]:
        """Maximize the acquisition; also returns the target's posterior ``(mean, std)`` at
        the picks (output units), which the selection computed anyway, and whether the pick
        is ``ahead``'s, a pick :meth:`prepare` made for this state that still beats every
        candidate under the weights of the new values (``q = 1``;
        :func:`~server.steering.optimize.select`)."""
        spec, kind = self.spec, effective_acquisition(self.spec)
        d = spec.dim
        hp = gp.hp
        scorer = self._scorer(gp, n)
        x_ahead = None
        if ahead is not None and isinstance(gp, ExactGP):  # (_still_ahead: exact)
            x_ahead = ahead.U[0]
            U0 = torch.as_tensor(ahead.U[:1], dtype=DTYPE)
            with torch.no_grad():  # its solve, grown from the prepare's
                w = gp.solve_grown(U0, ahead.w[:, :1], ahead.base())
            if w is not None and isinstance(scorer.f, Fantasies):
                scorer.f.remember(U0, w)
        picks = select(scorer, q, P_unit,
                       lambda U: design.forbidden_mask(spec, design.from_unit(spec, U)),
                       x_ahead)
        U = np.array([p.x for p in picks]).reshape(-1, d)
        values: list[float | None] = [
            scorer.to_output_units(p.value, hp.y_mean, hp.y_std) for p in picks]
        mean = np.array([p.mean for p in picks]) * hp.y_std + hp.y_mean
        std = np.sqrt(np.array([p.var for p in picks])) * hp.y_std
        return U, values, kind, (mean, std), any(p.ahead for p in picks)

    # --- posterior and status ---------------------------------------------------------------

    def posterior(self, X: np.ndarray) -> Posterior:
        """Latent posterior mean and std of every output, in output units.

        Args:
            X: ``n x d`` positions in spec units.

        Returns:
            Means and stds, ``{output: (n,)}``; NaN for an output without a model yet.

        Raises:
            InvalidInput: ``X`` is not a finite ``n x d`` array.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.spec.dim or not np.isfinite(X).all():
            raise InvalidInput("X", f"must be a finite n x {self.spec.dim} array")
        return self._posterior(X, {})

    def _posterior(self, X: np.ndarray,
                   known: dict[int, tuple[np.ndarray, np.ndarray]]) -> Posterior:
        """:meth:`posterior`, taking the outputs in ``known`` (``{j: (mean, std)}``) as given."""
        with self._lock:
            gps = [out.gp for out in self._outputs]
        U = torch.as_tensor(design.to_unit(self.spec, X), dtype=DTYPE)
        mean, std = {}, {}
        for j, (out, gp) in enumerate(zip(self._outputs, gps, strict=True)):
            mu, sd = np.full(len(X), np.nan), np.full(len(X), np.nan)
            if j in known:
                mu, sd = known[j]
            elif gp is not None:
                chunk = max(256, PREDICT_ENTRIES // max(gp.n, 1))
                with torch.no_grad():
                    for s in range(0, len(X), chunk):
                        m_, v_ = gp.predict(U[s:s + chunk])
                        mu[s:s + chunk] = m_.numpy() * gp.hp.y_std + gp.hp.y_mean
                        sd[s:s + chunk] = v_.sqrt().numpy() * gp.hp.y_std
            mean[out.name], std[out.name] = mu, sd
        return Posterior(mean=mean, std=std)

    def hyperparameters(self) -> dict[str, dict[str, Any] | None]:
        """JSON-ready hyperparameters per output (``None`` before the first fit); the
        constructor takes them back as a warm start."""
        with self._lock:
            return {o.name: None if o.hp is None else hyper.to_dict(self.spec, o.hp)
                    for o in self._outputs}

    def status(self) -> ModelStatus:
        """The engine's state per output (counts, hyperparameters, fit history)."""
        with self._lock:
            outputs = {
                o.name: OutputStatus(
                    n=len(self._rows(j)), fitted_n=0 if o.hp is None else o.hp.fitted_n,
                    hyperparameters={} if o.hp is None else hyper.to_dict(self.spec, o.hp),
                    last_fit_at=o.last_fit_at, last_fit_seconds=o.last_fit_seconds,
                    fit_failures=o.failures, last_error=o.last_error,
                    map_error=self._map_error(j, o) if j == self._target else None)
                for j, o in enumerate(self._outputs)}
            return ModelStatus(n=self._n, outputs=outputs, refitting=self._refitting)

    def _map_error(self, j: int, out: _Output) -> MapError | None:
        """:class:`MapError` of output ``j`` from its posterior's variance at the fixed
        candidate set (uniform over the allowed region; the point cache keeps it current,
        so this costs O(candidates)); lock held. ``None`` without a posterior."""
        gp = out.gp
        if gp is None:
            return None
        caches = ([g.cache for g in gp.gps] if isinstance(gp, TiledGP)  # a tile: its box's
                  else [gp.cache])
        caches = [c for c in caches if c is not None]
        if not caches:
            return None
        var = torch.cat([c.var[:c.M] for c in caches])
        mean = torch.cat([c.mean[:c.M] for c in caches])
        if var.numel() == 0 or not bool(torch.isfinite(mean).all()):
            return None  # a posterior the numbers broke says nothing
        rms = float(var.clamp_min(0.0).mean().sqrt()) * gp.hp.y_std
        y = self._Y[self._rows(j)[:gp.n], j]  # the rows the posterior holds
        span = float(y.max() - y.min()) if y.size else 0.0
        # Relative to the range of the rows the hyperparameters were fitted on, in whose
        # units the variance is: rows ingested since can widen the range before a refit
        # says what they do to the error (one glitch of 1e6 made a 1.5% map read 3e-8).
        fitted = gp.hp.fitted_n if 0 < gp.hp.fitted_n <= gp.n else gp.n
        fit_span = float(np.ptp(y[:fitted])) if fitted else 0.0
        if not (math.isfinite(rms) and math.isfinite(span)):
            return None
        return MapError(rms_std=rms, measured_range=span,
                        relative=rms / fit_span if fit_span > 0 else None, n=gp.n)
