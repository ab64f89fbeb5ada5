"""Sample efficiency: how many measurements each strategy needs to map a sample (issue #5).

On synthetic sample maps with a known truth (``benchmarks/maps.py``: 2-D combinatorial
films with domain boundaries and hot spots, a 3-D and a 4-D map, additive Gaussian noise),
in one run with the same seeds and the same noise draws (the i-th measurement of every
strategy gets the same noise value):

* ``beamsteer``: the real service over HTTP (uvicorn on SQLite in a thread), a ``map``
  experiment with its defaults (integrated variance), ask 1 -> measure -> tell, posterior
  mean read back from the posterior endpoint.
* ``gpcam``: gpCAM 8.6.1 ``GPOptimizer``, ``ask(acquisition_function="variance")``.
* ``botorch``: a plain BoTorch loop, ``SingleTaskGP`` + ``fit_gpytorch_mll`` +
  ``optimize_acqf`` with ``PosteriorStandardDeviation`` (``botorch-nipv``: with
  ``qNegIntegratedPosteriorVariance``, opt-in, 20-35 s per ask here).
* ``random`` (uniform) and ``grid`` (the best regular grid of at most N points for every
  budget N), each mapped by Beamsteer's own ``GPEngine`` fitted in-process on its points.

Reported: RMSE of the posterior mean against the truth on a fixed dense test set, as a
fraction of the map's range, at N = 25..400, and the N each strategy needs to reach 5% and
2% of the range. Run ``python benchmarks/autonomy.py --help``; results go to
``benchmarks/out/``.
"""

from __future__ import annotations

import os

# Before numpy/torch load: one BLAS thread and passive OpenMP waits were the only steady
# setting on the 2-core VMs (DESIGN.md, "Things that are easy to get wrong").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `server` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.maps import MAPS, NOISE_FRACTION, TEST_POINTS, SampleMap  # noqa: E402
from clients.http.models import MAP_ERROR_MIN_POINTS_PER_DIM  # noqa: E402

STRATEGIES = ("beamsteer", "gpcam", "botorch", "random", "grid")
OPTIONAL_STRATEGIES = ("botorch-nipv", "beamsteer-ahead")
PEERS = ("gpcam", "botorch", "botorch-nipv", "random", "grid")
# RMSE is taken at these N (a ~1.2x ladder, fine enough to place a threshold crossing)
CHECKPOINTS = (10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100, 120, 140, 160, 200, 240,
               280, 320, 360, 400)
REPORT_N = (25, 50, 100, 200, 400)  # columns of the RMSE table
THRESHOLDS = (0.05, 0.02)  # RMSE as a fraction of the map's range
TARGET_RATIO = 0.8  # Beamsteer's N over the best peer's N, on average over the maps
BOOTSTRAP_REPS = 2000  # seed resamples behind the verdicts' spread
GPCAM_TRAIN_AT = (10, 20, 40, 80, 160, 320)  # plus once on the initial design
BOTORCH_REFIT_GROWTH = 0.1  # the BoTorch loop refits once N grew 10% since its last fit
BOTORCH_RESTARTS, BOTORCH_RAW = 10, 512  # optimize_acqf, as in ask_latency.py
NIPV_POINTS = 512  # Monte-Carlo integration points of qNIPV
OUTPUT = "value"
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "autonomy"
QUICK_MAPS = ("film-2d", "phase-3d")


# --- configuration and one task -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What to run (see ``--help``)."""

    maps: tuple[str, ...]
    seeds: tuple[int, ...]
    strategies: tuple[str, ...]
    checkpoints: tuple[int, ...]
    jobs: int
    out: Path
    quick: bool
    known_noise: bool
    noise_fraction: float = NOISE_FRACTION
    acquisition: str | None = None
    reanalyse: bool = False  # out is an earlier run's JSON: analyse it, run nothing
    batch: int = 1  # Beamsteer's positions per ask


@dataclass(frozen=True)
class Task:
    """One strategy on one map with one seed."""

    map: str
    seed: int
    strategy: str
    checkpoints: tuple[int, ...]
    known_noise: bool = True
    noise_fraction: float = NOISE_FRACTION
    acquisition: str | None = None
    batch: int = 1


def initial_design_size(d: int) -> int:
    """Beamsteer's default initial design, ``max(4, 2d)``; the peers start with as many."""
    return max(4, 2 * d)


class Problem:
    """A map, its test set and the noise draws of one seed.

    Args:
        m: The sample map.
        seed: Seeds the noise (shared by all strategies) and each strategy's randomness.
        n_max: Most measurements.
        known_noise: Tell every strategy the noise variance (gpCAM always gets it).
        noise_fraction: Noise sd as a fraction of the map's range.
        acquisition: Beamsteer's acquisition (``None``: the ``map`` goal's default).
        batch: Beamsteer's positions per ask.
        noise_key: Seed of the noise draws (default: the seed and the map's index).
    """

    def __init__(self, m: SampleMap, seed: int, n_max: int, known_noise: bool = True,
                 noise_fraction: float = NOISE_FRACTION, acquisition: str | None = None,
                 noise_key: Sequence[int] | None = None, batch: int = 1) -> None:
        self.map, self.seed, self.n_max, self.known_noise = m, seed, n_max, known_noise
        self.acquisition, self.batch = acquisition, batch
        self.T = m.test_points()
        self.truth_T = m.truth(self.T)
        self.range = float(self.truth_T.max() - self.truth_T.min())
        self.noise_sd = noise_fraction * self.range
        if noise_key is None:
            noise_key = (seed, sorted(MAPS).index(m.name), 1)
        self.eps = np.random.default_rng(list(noise_key)).standard_normal(n_max)

    def measure(self, X: np.ndarray, first: int) -> np.ndarray:
        """Noisy values at ``X`` (``k x d``), the measurements ``first .. first + k - 1``."""
        X = np.atleast_2d(X)
        return self.map.truth(X) + self.noise_sd * self.eps[first:first + len(X)]

    def rmse(self, mean: np.ndarray) -> float:
        """RMSE of a posterior mean at the test points, as a fraction of the range."""
        mean = np.asarray(mean, dtype=float)
        if not np.isfinite(mean).all():
            return float("nan")
        return float(np.sqrt(np.mean((mean - self.truth_T) ** 2)) / self.range)

    def spec(self) -> dict[str, Any]:
        """Beamsteer's experiment spec: a ``map`` goal, every other field its default (the
        acquisition too, unless ``--acquisition`` names one)."""
        extra = {} if self.acquisition is None else {"acquisition": self.acquisition}
        return {"name": f"autonomy-{self.map.name}-{self.seed}", "goal": "map",
                "seed": self.seed, **extra,
                "parameters": [{"name": n, "lower": lo, "upper": hi, "units": u}
                               for n, lo, hi, u in self.map.axes],
                "outputs": [{"name": OUTPUT}]}


Tick = Callable[[int], None]


# --- Beamsteer over HTTP ------------------------------------------------------------------


def run_beamsteer(p: Problem, checkpoints: Sequence[int], tick: Tick, *,
                  ahead: bool = False) -> dict[str, Any]:
    """Ask one position, measure, tell, through the HTTP API of a live server.

    ``ahead`` (strategy ``beamsteer-ahead``): as the Bluesky plan with ``ask_ahead``, the
    next batch is asked for before this one is measured and told (this one is pending
    then), so each pick knows one batch less than in turn. With ``--batch`` > 1 that is
    the plan's earliest ask (its ask for a slow server); with quick asks the plan asks at
    a batch's last position, knowing the others. Stops on the estimate are counted where
    the estimate was read, not one batch later as the plan asking ahead stops.

    After each tell the loop waits for the refit the tell may have scheduled (the server
    refits in the background when the data grew 25%; a beamline measurement takes longer
    than those refits, so a real ask would see the refitted model too); after each ask, for
    the next ask the server prepares meanwhile (``GPEngine.prepare``; a real server does
    that for loops that measure for a while, this one is told to, ``lookahead_room=0``).
    Both waits keep a run's picks independent of thread timing."""
    from clients.http import Client
    from server.live import LiveServer
    from server.settings import Settings

    names = [a[0] for a in p.map.axes]
    rmse, sources, fitted = [], {}, []
    # the server's own estimate of its map error after every tell, and where a plan that
    # stops on it (clients.bluesky.autonomous_scan's target_error) would have stopped
    estimate: list[float | None] = []
    stops: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # lookahead_room=0: prepare after every ask, as for a beamline whose measurement
        # outlasts the preparing (this loop "measures" in no time, then waits for it)
        settings = Settings(database_url=f"sqlite:///{Path(tmp) / 'beamsteer.db'}",
                            data_dir=Path(tmp), log_json=False, log_level="warning",
                            lookahead_room=0)
        with LiveServer(settings) as live, Client(live.url, timeout=300) as client:
            exp = client.create_experiment(p.spec())

            def ask(n: int) -> list[Any]:
                """The batch to measure after ``n`` points: it ends on every checkpoint
                (the RMSE is taken at exactly N; with --batch the checkpoints are multiples
                of it), and at p.n_max."""
                if n >= p.n_max:
                    return []
                batch = client.suggest(
                    exp, min(p.batch, min(c for c in (*checkpoints, p.n_max) if c > n) - n))
                for s in batch:
                    sources[s.source] = sources.get(s.source, 0) + 1
                return batch

            n = 0
            batch = ask(n)
            while n < p.n_max:
                # asking ahead: the next batch, while this one is measured (pending)
                after = ask(n + len(batch)) if ahead else None
                live.service.wait_for_lookahead(300)  # a measurement outlasts it
                X = np.array([[s.position[a] for a in names] for s in batch])
                Y = p.measure(X, n)
                noise = {OUTPUT: p.noise_sd**2} if p.known_noise else None
                client.measure(exp, [{"position": s.position, "values": {OUTPUT: float(v)},
                                      "noise": noise, "suggestion": s}
                                     for s, v in zip(batch, Y, strict=True)])
                n += len(batch)
                live.service.wait_for_refits(300)
                tick(len(batch))
                now = client.get_experiment(exp)
                err = now.map_error
                # read after each batch, as a plan reads it: None inside a batch
                estimate += [None] * (len(batch) - 1) + [None if err is None else err.relative]
                # the clients' own rule (Experiment.map_good_enough), default min_points
                due = [t for t in THRESHOLDS if f"{t:g}" not in stops
                       and now.map_good_enough(t)]
                true_now = None
                if due or n in checkpoints:
                    post = client.posterior(exp, points=p.T.tolist())
                    true_now = p.rmse([np.nan if v is None else v for v in post.mean(OUTPUT)])
                for t in due:
                    stops[f"{t:g}"] = {"n": n, "rmse": true_now}
                if n in checkpoints:
                    rmse.append(true_now)
                    fitted.append(None if now.model is None
                                  else now.model.outputs[OUTPUT].fitted_n)
                batch = after if after is not None else ask(n)
            served_ahead = live.service.metrics.registry.get_sample_value(
                "beamsteer_suggestions_ahead_total")
    return {"rmse": rmse, "suggestion_sources": sources, "fitted_n": fitted,
            "suggestions_ahead": served_ahead, "estimate": estimate, "stops": stops}


# --- gpCAM ----------------------------------------------------------------------------------


def run_gpcam(p: Problem, checkpoints: Sequence[int], tick: Tick) -> dict[str, Any]:
    """gpCAM's ``GPOptimizer`` with its default kernel, trainer and ``ask`` optimizer, the
    acquisition ``variance``, the true noise variance, trained on the initial design and
    at :data:`GPCAM_TRAIN_AT`."""
    from gpcam import GPOptimizer

    d = p.map.dim
    n0 = initial_design_size(d)
    bounds = np.c_[p.map.lower, p.map.upper]
    rng = np.random.default_rng([p.seed, 2])
    np.random.seed(p.seed)  # gpCAM's optimizers draw from numpy's global generator
    X = p.map.from_unit(rng.random((n0, d)))
    var = p.noise_sd**2
    rmse, trained = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "hyperparameters initialized", default bounds
        gp = GPOptimizer(X, p.measure(X, 0), noise_variances=np.full(n0, var))
        gp.train()
        trained.append(n0)
        tick(n0)
        for n in range(n0, p.n_max + 1):
            if n in GPCAM_TRAIN_AT:
                gp.train()
                trained.append(n)
            if n in checkpoints:
                rmse.append(p.rmse(gp.posterior_mean(p.T)["m(x)"]))
            if n == p.n_max:
                break
            x = np.asarray(gp.ask(bounds, n=1, acquisition_function="variance")["x"])
            x = np.clip(x.reshape(1, d), p.map.lower, p.map.upper)
            gp.tell(x, p.measure(x, n), noise_variances=np.array([var]))
            tick(1)
    return {"rmse": rmse, "trained_at": trained}


# --- a plain BoTorch loop -------------------------------------------------------------------


def run_botorch(p: Problem, checkpoints: Sequence[int], tick: Tick, *,
                nipv: bool = False) -> dict[str, Any]:
    """``SingleTaskGP`` (inputs scaled to the unit cube, ``Standardize``) fitted with
    ``fit_gpytorch_mll`` whenever N grew by :data:`BOTORCH_REFIT_GROWTH` (every step up to
    N = 10), conditioned on every new point with the last hyperparameters in between
    (``load_state_dict``), and ``optimize_acqf(q=1)`` of ``PosteriorStandardDeviation`` (or
    ``qNegIntegratedPosteriorVariance`` with ``nipv``). Starts from a scrambled-Sobol
    design of ``max(4, 2d)`` points."""
    import torch
    from botorch.acquisition import PosteriorStandardDeviation
    from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from botorch.optim import optimize_acqf
    from botorch.utils.sampling import draw_sobol_samples
    from gpytorch.mlls import ExactMarginalLogLikelihood

    d = p.map.dim
    torch.manual_seed(p.seed)
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)
    U = draw_sobol_samples(bounds, n=initial_design_size(d), q=1, seed=p.seed).squeeze(1)
    Y = torch.as_tensor(p.measure(p.map.from_unit(U.numpy()), 0)).unsqueeze(-1)
    mc = draw_sobol_samples(bounds, n=NIPV_POINTS, q=1, seed=p.seed + 1).squeeze(1)
    T = torch.as_tensor(p.map.to_unit(p.T))
    tick(len(U))
    rmse, fits, state, fitted_n = [], 0, None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # input-data and optimizer warnings it handles
        while True:
            n = len(U)
            yvar = torch.full_like(Y, p.noise_sd**2) if p.known_noise else None
            model = SingleTaskGP(U, Y, train_Yvar=yvar, outcome_transform=Standardize(m=1))
            if state is None or n >= max(fitted_n + 1, (1 + BOTORCH_REFIT_GROWTH) * fitted_n):
                fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
                state, fitted_n, fits = model.state_dict(), n, fits + 1
            else:
                model.load_state_dict(state)  # keeps this data's standardization
            model.eval()
            if n in checkpoints:
                with torch.no_grad():
                    rmse.append(p.rmse(model.posterior(T).mean.squeeze(-1).numpy()))
            if n >= p.n_max:
                break
            acq = (qNegIntegratedPosteriorVariance(model, mc_points=mc) if nipv
                   else PosteriorStandardDeviation(model))
            x, _ = optimize_acqf(acq, bounds, q=1, num_restarts=BOTORCH_RESTARTS,
                                 raw_samples=BOTORCH_RAW)
            x = x.detach().clamp(0, 1).to(torch.float64)
            U = torch.cat([U, x])
            Y = torch.cat([Y, torch.as_tensor(p.measure(p.map.from_unit(x.numpy()), n))
                           .unsqueeze(-1)])
            tick(1)
    return {"rmse": rmse, "fits": fits}


# --- random and grid, mapped by Beamsteer's engine ------------------------------------------


def engine_rmse(p: Problem, X: np.ndarray) -> float:
    """RMSE of Beamsteer's ``GPEngine`` (the service's model, hyperparameters fitted from
    scratch) fitted on ``X`` with measurements ``0 .. len(X) - 1``."""
    from server.steering.engine import GPEngine
    from server.steering.spec import ExperimentSpec

    engine = GPEngine(ExperimentSpec.from_dict(p.spec()))
    yvar = np.full((len(X), 1), p.noise_sd**2) if p.known_noise else None
    engine.ingest(X, p.measure(X, 0)[:, None], yvar)
    status = engine.refit()
    if status.outputs[OUTPUT].fit_failures:
        return float("nan")
    return p.rmse(engine.posterior(p.T).mean[OUTPUT])


def run_random(p: Problem, checkpoints: Sequence[int], tick: Tick) -> dict[str, Any]:
    """Uniform random positions (a prefix of one sequence per seed)."""
    U = np.random.default_rng([p.seed, 3]).random((p.n_max, p.map.dim))
    X = p.map.from_unit(U)
    rmse, done = [], 0
    for n in checkpoints:
        rmse.append(engine_rmse(p, X[:n]))
        tick(n - done)
        done = n
    return {"rmse": rmse}


def grid_counts(n: int, d: int) -> tuple[int, ...]:
    """Points per axis of the regular grid with the most points, at most ``n``, whose axes
    differ by at most one point (e.g. 400 in 4-D: 5 x 5 x 4 x 4)."""
    k = max(1, int(math.floor(n ** (1.0 / d) + 1e-9)))
    while (k + 1) ** d <= n:
        k += 1
    best = (k,) * d
    for j in range(1, d + 1):  # j axes get one point more
        counts = (k + 1,) * j + (k,) * (d - j)
        if math.prod(counts) <= n:
            best = counts
    return best


def grid_points(m: SampleMap, n: int) -> np.ndarray:
    """The cell-centred grid of :func:`grid_counts` points, in raster (snake) order."""
    axes = [(np.arange(c) + 0.5) / c for c in grid_counts(n, m.dim)]
    U = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, m.dim)
    return m.from_unit(U)


def run_grid(p: Problem, checkpoints: Sequence[int], tick: Tick) -> dict[str, Any]:
    """For every budget N its own best grid (not a prefix of a finer raster, which would
    leave part of the sample unmeasured); the grid's size is recorded."""
    rmse, sizes, done, cache = [], [], 0, {}
    for n in checkpoints:
        shape = grid_counts(n, p.map.dim)
        if shape not in cache:
            cache[shape] = engine_rmse(p, grid_points(p.map, n))
        rmse.append(cache[shape])
        sizes.append(math.prod(shape))
        tick(n - done)
        done = n
    return {"rmse": rmse, "grid_points": sizes}


RUNNERS: dict[str, Callable[[Problem, Sequence[int], Tick], dict[str, Any]]] = {
    "beamsteer": run_beamsteer,
    "beamsteer-ahead": lambda p, c, t: run_beamsteer(p, c, t, ahead=True),
    "gpcam": run_gpcam, "botorch": run_botorch,
    "botorch-nipv": lambda p, c, t: run_botorch(p, c, t, nipv=True),
    "random": run_random, "grid": run_grid}


def run_task(task: Task, progress: bool = False) -> dict[str, Any]:
    """Run one task (in a worker process or here) and return its JSON-ready result."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*",
                            category=DeprecationWarning)
    p = Problem(MAPS[task.map], task.seed, max(task.checkpoints), task.known_noise,
                task.noise_fraction, task.acquisition, batch=task.batch)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=p.n_max, unit="pt", leave=False, file=sys.stderr, position=1,
                   desc=f"{task.strategy} {task.map} seed {task.seed}"[:40])
    t0 = time.perf_counter()
    try:
        out = RUNNERS[task.strategy](p, task.checkpoints, bar.update if bar else lambda n: None)
    finally:
        if bar is not None:
            bar.close()
    return {**asdict(task), "checkpoints": list(task.checkpoints),
            "seconds": time.perf_counter() - t0, "range": p.range, "noise_sd": p.noise_sd,
            **out}


# --- analysis -------------------------------------------------------------------------------


def mean_curve(results: list[dict[str, Any]], m: str, strategy: str) -> np.ndarray | None:
    """Mean over seeds of the RMSE fraction at each checkpoint (``None`` if not run)."""
    rows = [r["rmse"] for r in results if r["map"] == m and r["strategy"] == strategy]
    return np.mean(np.array(rows, dtype=float), axis=0) if rows else None


def n_to_reach(ns: Sequence[int], curve: np.ndarray, threshold: float) -> float | None:
    """The N at which ``curve`` first falls to ``threshold``, interpolated log-log between
    the two checkpoints around the crossing; ``None`` if it never does."""
    for i, v in enumerate(curve):
        if np.isfinite(v) and v <= threshold:
            if i == 0:
                return float(ns[0])
            v0, n0, n1 = curve[i - 1], ns[i - 1], ns[i]
            if not np.isfinite(v0) or v0 <= v:
                return float(n1)
            f = (math.log(v0) - math.log(threshold)) / (math.log(v0) - math.log(v))
            return float(math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0))))
    return None


@dataclass
class Ratio:
    """Beamsteer's N over the best peer's N at one threshold on one map. ``bound`` is
    ``"<"`` or ``">"`` where a strategy never reached the threshold (its N counted as the
    largest budget, so the ratio is only a bound)."""

    map: str
    threshold: float
    beamsteer: float | None
    best_peer: str | None
    best_peer_n: float | None
    grid_n: float | None
    ratio: float | None
    bound: str = ""

    def text(self) -> str:
        """The ratio with its bound sign, or ``-``."""
        if self.ratio is None:
            return "-"
        return f"{self.bound}{self.ratio:.2f}"


def analyse(cfg: Config, results: list[dict[str, Any]]) -> dict[str, Any]:
    """RMSE tables, N to reach each threshold, ratios to the best peer and to the grid."""
    ns = list(cfg.checkpoints)
    n_max = ns[-1]
    reach: dict[str, dict[str, dict[str, float | None]]] = {}
    ratios: list[Ratio] = []
    for m in cfg.maps:
        reach[m] = {}
        for s in cfg.strategies:
            c = mean_curve(results, m, s)
            if c is not None:
                reach[m][s] = {f"{t:g}": n_to_reach(ns, c, t) for t in THRESHOLDS}
        for t in THRESHOLDS:
            key = f"{t:g}"
            bs = reach[m].get("beamsteer", {}).get(key)
            peers = {s: v[key] for s, v in reach[m].items() if s in PEERS}
            reached = {s: v for s, v in peers.items() if v is not None}
            best = min(reached, key=lambda s: reached[s]) if reached else None
            best_n = reached[best] if best else None
            grid_n = peers.get("grid")
            r = Ratio(m, t, bs, best, best_n, grid_n, None)
            if "beamsteer" in reach[m] and peers:
                top = best_n if best_n is not None else float(n_max)
                mine = bs if bs is not None else float(n_max)
                r.ratio = mine / top
                r.bound = (">" if bs is None and best_n is not None else
                           "<" if best_n is None and bs is not None else
                           "~" if bs is None and best_n is None else "")
            ratios.append(r)
    summary = {}
    for t in THRESHOLDS:
        # a map where neither Beamsteer nor any peer reached the threshold says nothing
        vals = [r.ratio for r in ratios if r.threshold == t and r.ratio is not None
                and r.bound != "~"]
        worse_than_grid = [r.map for r in ratios if r.threshold == t and r.grid_n is not None
                           and (r.beamsteer is None or r.beamsteer > r.grid_n)]
        summary[f"{t:g}"] = {"mean_ratio": float(np.mean(vals)) if vals else None,
                             "maps": len(vals), "worse_than_grid": worse_than_grid}
    return {"reach": reach, "ratios": [asdict(r) for r in ratios], "summary": summary,
            "_ratios": ratios}


def bootstrap(cfg: Config, results: list[dict[str, Any]], reps: int = BOOTSTRAP_REPS,
              seed: int = 0) -> dict[str, Any] | None:
    """How far the verdicts move with the seeds: resample the seeds with replacement (one
    draw for every map and strategy, so the comparison stays paired), redo :func:`analyse`.

    Returns, per threshold, the mean ratio's 5th/50th/95th percentile over the draws and
    the share of draws that meet the target; per map and threshold, the share of draws in
    which Beamsteer needs no more than the grid. ``None`` with fewer than 3 seeds.
    """
    seeds = list(cfg.seeds)
    if len(seeds) < 3 or "beamsteer" not in cfg.strategies:
        return None
    by_seed = {s: [r for r in results if r["seed"] == s] for s in seeds}
    rng = np.random.default_rng(seed)
    means: dict[str, list[float]] = {f"{t:g}": [] for t in THRESHOLDS}
    grid_ok: dict[str, dict[str, list[bool]]] = {m: {f"{t:g}": [] for t in THRESHOLDS}
                                                 for m in cfg.maps}
    for _ in range(reps):
        draw = [r for s in rng.choice(seeds, len(seeds)) for r in by_seed[int(s)]]
        an = analyse(cfg, draw)
        for t, summ in an["summary"].items():
            if summ["mean_ratio"] is not None:
                means[t].append(summ["mean_ratio"])
        for r in an["_ratios"]:
            if r.grid_n is not None or r.beamsteer is not None:
                grid_ok[r.map][f"{r.threshold:g}"].append(
                    r.grid_n is None or (r.beamsteer is not None and r.beamsteer <= r.grid_n))
    out: dict[str, Any] = {"reps": reps, "seeds": seeds, "mean_ratio": {}, "not_above_grid": {}}
    for t, v in means.items():
        if v:
            lo, mid, hi = np.percentile(v, [5, 50, 95])
            out["mean_ratio"][t] = {"p05": float(lo), "p50": float(mid), "p95": float(hi),
                                    "met": float(np.mean(np.array(v) <= TARGET_RATIO))}
    for m, per_t in grid_ok.items():
        out["not_above_grid"][m] = {t: float(np.mean(v)) for t, v in per_t.items() if v}
    return out


def bootstrap_table(boot: dict[str, Any]) -> str:
    """The markdown of :func:`bootstrap`'s result."""
    lines = [f"### Seed bootstrap ({boot['reps']} draws of {len(boot['seeds'])} seeds with "
             "replacement, the same draw for every map and strategy)", "",
             "| threshold | mean ratio, median [5%-95%] | draws meeting <= "
             f"{TARGET_RATIO} | " + " | ".join(f"{m} <= grid" for m in boot["not_above_grid"])
             + " |", "|---:|---:|---:|" + "---:|" * len(boot["not_above_grid"])]
    for t, q in boot["mean_ratio"].items():
        cells = [f"{boot['not_above_grid'][m][t]:.0%}" if t in boot["not_above_grid"][m]
                 else "-" for m in boot["not_above_grid"]]
        lines.append(f"| {float(t):.0%} | {q['p50']:.2f} [{q['p05']:.2f}-{q['p95']:.2f}] | "
                     f"{q['met']:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stopping(cfg: Config, results: list[dict[str, Any]], an: dict[str, Any]
             ) -> dict[str, Any] | None:
    """How a plan that stops on the server's own error estimate would have done.

    Per map and threshold, over the seeds: the N at which the estimate (RMS posterior std
    over the measured range) first fell to the threshold from ``10 d`` points on, the true
    RMSE of the map there, and how often that RMSE met the threshold; beside them the N
    the seed-mean curve needed (an oracle that knows the truth) and the grid's. Per map,
    the estimate over the true RMSE at the checkpoints from ``10 d`` on. ``None`` for runs
    without the estimate (before it existed)."""
    runs = [r for r in results if r["strategy"] == "beamsteer" and "stops" in r]
    if not runs:
        return None
    ns = list(cfg.checkpoints)
    rows, calibration = [], {}
    for m in cfg.maps:
        mine = [r for r in runs if r["map"] == m]
        if not mine:
            continue
        trust_from = MAP_ERROR_MIN_POINTS_PER_DIM * MAPS[m].dim
        ratios = [est / true for r in mine for n, true in zip(ns, r["rmse"], strict=True)
                  if n >= trust_from and n <= len(r["estimate"])
                  and (est := r["estimate"][n - 1]) is not None and true and true > 0]
        if ratios:
            lo, mid, hi = np.percentile(ratios, [5, 50, 95])
            calibration[m] = {"p05": float(lo), "p50": float(mid), "p95": float(hi),
                              "checkpoints": len(ratios)}
        for t in THRESHOLDS:
            key = f"{t:g}"
            fired = [r["stops"][key] for r in mine if key in r["stops"]]
            reach = an["reach"].get(m, {})
            rows.append({
                "map": m, "threshold": t, "runs": len(mine), "stopped": len(fired),
                "n": [f["n"] for f in fired], "rmse": [f["rmse"] for f in fired],
                "met": sum(f["rmse"] <= t for f in fired),
                "oracle_n": reach.get("beamsteer", {}).get(key),
                "grid_n": reach.get("grid", {}).get(key), "grid_run": "grid" in reach})
    return {"rows": rows, "calibration": calibration}


def stopping_table(stop: dict[str, Any], n_max: int) -> str:
    """The markdown of :func:`stopping`'s result."""
    lines = ["### Stopping on the model's own error estimate (a plan with `target_error` = "
             "the threshold, trusted from 10 d points on)", "",
             "| map | threshold | runs stopped | N at the stop, mean [min-max] | true RMSE "
             "there, % of range, mean [max] | stops whose map met the threshold | N the "
             "seed-mean curve needed (knowing the truth) | grid N |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in stop["rows"]:
        n, e = np.array(r["n"], dtype=float), np.array(r["rmse"], dtype=float) * 100
        lines.append(
            f"| {r['map']} | {r['threshold']:.0%} | {r['stopped']}/{r['runs']} | "
            + (f"{n.mean():.0f} [{n.min():.0f}-{n.max():.0f}] | "
               f"{e.mean():.2f} [{e.max():.2f}] | {r['met']}/{r['stopped']}"
               if len(n) else "- | - | -")
            + f" | {_fmt_n(r['oracle_n'], n_max)} | "
            + (f"{_fmt_n(r['grid_n'], n_max)} |" if r.get("grid_run", True) else "- |"))
    lines += ["", "| map | estimate / true RMSE at the checkpoints from 10 d on: median "
              "[5%-95%] | checkpoints |", "|---|---:|---:|"]
    for m, c in stop["calibration"].items():
        lines.append(f"| {m} | {c['p50']:.2f} [{c['p05']:.2f}-{c['p95']:.2f}] | "
                     f"{c['checkpoints']} |")
    return "\n".join(lines)


def analysed(cfg: Config, results: list[dict[str, Any]]
             ) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """:func:`analyse`, :func:`bootstrap` and their markdown tables (what is printed and
    what the report holds), computed once."""
    an, boot = analyse(cfg, results), bootstrap(cfg, results)
    text = report_tables(cfg, results, an)
    if boot is not None:
        text += "\n\n" + bootstrap_table(boot)
    stop = stopping(cfg, results, an)
    if stop is not None:
        an["stopping"] = stop
        text += "\n\n" + stopping_table(stop, cfg.checkpoints[-1])
    return an, boot, text


def _fmt_n(v: float | None, n_max: int) -> str:
    return f"> {n_max}" if v is None else f"{v:.0f}"


def report_tables(cfg: Config, results: list[dict[str, Any]], an: dict[str, Any]) -> str:
    """The markdown tables: RMSE at the report N, N to reach, ratios."""
    ns = list(cfg.checkpoints)
    cols = [n for n in REPORT_N if n in ns]
    n_max = ns[-1]
    lines = ["### RMSE of the posterior mean, % of the map's range (mean over seeds; "
             "min-max in brackets)", "",
             "| map | strategy | " + " | ".join(f"N={n}" for n in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for m in cfg.maps:
        for s in cfg.strategies:
            rows = np.array([r["rmse"] for r in results if r["map"] == m
                             and r["strategy"] == s], dtype=float)
            if not len(rows):
                continue
            cells = []
            for n in cols:
                v = rows[:, ns.index(n)] * 100
                cells.append(f"{v.mean():.2f}" if len(v) == 1 else
                             f"{v.mean():.2f} [{v.min():.2f}-{v.max():.2f}]")
            lines.append(f"| {m} | {s} | " + " | ".join(cells) + " |")
    lines += ["", "### N to reach an RMSE of 5% and 2% of the range (seed-mean curve, "
              "interpolated between checkpoints)", "",
              "| map | threshold | " + " | ".join(cfg.strategies)
              + " | best peer | Beamsteer / best peer | Beamsteer <= grid |",
              "|---|---:|" + "---:|" * len(cfg.strategies) + "---|---:|:---:|"]
    for r in an["_ratios"]:
        cells = [_fmt_n(an["reach"][r.map].get(s, {}).get(f"{r.threshold:g}"), n_max)
                 for s in cfg.strategies]
        grid_ok = ("-" if "grid" not in cfg.strategies
                   or (r.grid_n is None and r.beamsteer is None) else
                   "yes" if r.grid_n is None or (r.beamsteer is not None
                                                 and r.beamsteer <= r.grid_n) else "no")
        lines.append(f"| {r.map} | {r.threshold:.0%} | " + " | ".join(cells)
                     + f" | {r.best_peer or '-'} | {r.text()} | {grid_ok} |")
    lines += ["", "| threshold | mean ratio Beamsteer / best peer over maps | target "
              f"<= {TARGET_RATIO} | maps where Beamsteer needs more than the grid |",
              "|---:|---:|:---:|---|"]
    for t, s in an["summary"].items():
        mr = s["mean_ratio"]
        ok = "-" if mr is None else "met" if mr <= TARGET_RATIO else "not met"
        lines.append(f"| {float(t):.0%} | {'-' if mr is None else f'{mr:.2f}'} | {ok} | "
                     f"{', '.join(s['worse_than_grid']) or 'none'} |")
    return "\n".join(lines)


def plot(cfg: Config, results: list[dict[str, Any]], path: Path) -> None:
    """RMSE vs N, one panel per map, log y; seed mean with the min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = np.array(cfg.checkpoints)
    fig, axes = plt.subplots(1, len(cfg.maps), figsize=(3.4 * len(cfg.maps), 3.2),
                             squeeze=False, sharey=False)
    for ax, m in zip(axes[0], cfg.maps, strict=True):
        for s in cfg.strategies:
            rows = np.array([r["rmse"] for r in results if r["map"] == m
                             and r["strategy"] == s], dtype=float) * 100
            if not len(rows):
                continue
            style = {"lw": 2.2, "color": "k"} if s == "beamsteer" else {"lw": 1.2}
            line, = ax.plot(ns, rows.mean(0), label=s, **style)
            if len(rows) > 1:
                ax.fill_between(ns, rows.min(0), rows.max(0), alpha=0.15,
                                color=line.get_color())
        for t in THRESHOLDS:
            ax.axhline(t * 100, color="grey", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_title(f"{m} (d={MAPS[m].dim})", fontsize=9)
        ax.set_xlabel("measurements N", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("RMSE, % of range", fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    """CPU, threads, load, ``uptime`` and library versions (ask_latency's, plus tqdm and
    matplotlib)."""
    from importlib import metadata

    from benchmarks.ask_latency import machine_info as base

    info = base()
    for pkg in ("tqdm", "matplotlib"):
        try:
            info["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info["versions"][pkg] = None
    info["uptime_start"] = _uptime()
    return info


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_report(cfg: Config, info: dict[str, Any], results: list[dict[str, Any]],
                 started: datetime, seconds: float, command: str, final: bool
                 ) -> tuple[Path, Path, Path | None, str]:
    """Write ``<out>.json`` (every raw curve) and, when ``final``, ``.md`` and ``.png``;
    returns their paths and, when ``final``, the tables (:func:`analysed`)."""
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    md, js, png = (cfg.out.with_suffix(s) for s in (".md", ".json", ".png"))
    an, boot, tables = analysed(cfg, results) if final else (None, None, "")
    js.write_text(json.dumps({
        "started_at": started.isoformat(), "seconds": seconds, "command": command,
        "complete": final, "machine": info,
        "config": {"maps": cfg.maps, "seeds": cfg.seeds, "strategies": cfg.strategies,
                   "checkpoints": cfg.checkpoints, "thresholds": THRESHOLDS,
                   "noise": "known" if cfg.known_noise else "learned",
                   "noise_fraction": cfg.noise_fraction, "acquisition": cfg.acquisition,
                   "batch": cfg.batch,
                   "test_points": TEST_POINTS,
                   "gpcam_train_at": GPCAM_TRAIN_AT,
                   "botorch_refit_growth": BOTORCH_REFIT_GROWTH,
                   "botorch_optimize_acqf": {"num_restarts": BOTORCH_RESTARTS,
                                             "raw_samples": BOTORCH_RAW}},
        "maps": {m: {"dim": MAPS[m].dim, "axes": MAPS[m].axes,
                     "description": MAPS[m].description} for m in cfg.maps},
        "analysis": None if an is None else {**{k: v for k, v in an.items()
                                                if not k.startswith("_")}, "bootstrap": boot},
        "results": results}, indent=1))
    if not final:
        return md, js, None, ""
    v = info["versions"]
    head = [f"# Sample efficiency ({started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min)", "",
            f"`{command}`", "",
            f"{info['cpu'] or 'CPU'}, {info['cpu_count']} cores, OPENBLAS_NUM_THREADS="
            f"{info['OPENBLAS_NUM_THREADS']}, OMP_WAIT_POLICY={info['OMP_WAIT_POLICY']}; "
            f"torch {v['torch']}, botorch {v['botorch']}, gpytorch {v['gpytorch']}, "
            f"gpCAM {v['gpcam']}, fvgp {v['fvgp']}. Seeds {list(cfg.seeds)}, noise sd "
            f"{cfg.noise_fraction:.1%} of the range, noise "
            f"variance {'known to every strategy' if cfg.known_noise else 'learned'}, "
            f"Beamsteer's acquisition {cfg.acquisition or 'the map default'}, "
            f"{cfg.jobs} worker process(es).", "",
            f"uptime at start: `{info['uptime_start']}`  ",
            f"uptime at end: `{info.get('uptime_end', '')}`", "", ""]
    cost = ["", "### Wall time per run (s, mean over seeds; not a target)", "",
            "| map | " + " | ".join(cfg.strategies) + " |",
            "|---|" + "---:|" * len(cfg.strategies)]
    for m in cfg.maps:
        cells = []
        for s in cfg.strategies:
            t = [r["seconds"] for r in results if r["map"] == m and r["strategy"] == s]
            cells.append(f"{np.mean(t):.0f}" if t else "-")
        cost.append(f"| {m} | " + " | ".join(cells) + " |")
    md.write_text("\n".join(head) + tables + "\n" + "\n".join(cost) + "\n")
    plot(cfg, results, png)
    return md, js, png, tables


# --- main -----------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected non-negative integers")
    return values


def _names(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(choices)}")
        return names
    return parse


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line to :class:`Config`."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults (4 maps x 3 seeds x 5 strategies, N up to 400) took 12-13 minutes "
               "with 2 jobs on a shared 2-core VM; --quick about 1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"maps {','.join(QUICK_MAPS)}, seed 0, N up to 100 (unless given)")
    p.add_argument("--maps", type=_names(tuple(MAPS)), default=None,
                   help=f"comma-separated, of {','.join(MAPS)} (default: all)")
    p.add_argument("--seeds", type=_ints, default=None, help="comma-separated (default 0,1,2)")
    p.add_argument("--strategies", type=_names(STRATEGIES + OPTIONAL_STRATEGIES),
                   default=STRATEGIES, help="comma-separated; botorch-nipv is opt-in (slow)")
    p.add_argument("--max-n", type=int, default=None,
                   help="largest N (default 400; 100 with --quick)")
    p.add_argument("--noise", choices=("known", "learned"), default="known",
                   help="known: every strategy is told the noise variance, as gpCAM needs "
                        "it; learned: Beamsteer, BoTorch and the random/grid GP learn it "
                        "(gpCAM is still told)")
    p.add_argument("--noise-sd", type=float, default=NOISE_FRACTION,
                   help="measurement noise sd as a fraction of each map's range")
    p.add_argument("--acquisition", default=None,
                   choices=("integrated_variance", "gradient_variance", "misfit_variance",
                            "variance"),
                   help="Beamsteer's acquisition (default: the map goal's default)")
    p.add_argument("--batch", type=int, default=1,
                   help="Beamsteer's positions per ask (ask q, measure them, tell them "
                        "together; the checkpoints are rounded up to multiples of q); "
                        "only with --strategies beamsteer")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (results do not depend on it)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output path without suffix: writes .md, .json and .png")
    p.add_argument("--reanalyse", type=Path, default=None, metavar="JSON",
                   help="run nothing: print the tables (and the seed bootstrap) of an "
                        "earlier run's JSON, e.g. after a change to the analysis")
    a = p.parse_args(argv)
    if a.reanalyse is not None:
        return _from_json(a.reanalyse)
    maps = a.maps or (QUICK_MAPS if a.quick else tuple(MAPS))
    seeds = a.seeds or ((0,) if a.quick else (0, 1, 2))
    n_max = a.max_n or (100 if a.quick else CHECKPOINTS[-1])
    checkpoints = tuple(n for n in CHECKPOINTS if n <= n_max)
    if not checkpoints:
        p.error(f"--max-n must be at least {CHECKPOINTS[0]}")
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    if not 0 < a.noise_sd < 1:
        p.error("--noise-sd must be a fraction of the range in (0, 1)")
    if a.batch < 1 or (a.batch > 1 and not set(a.strategies) <= {"beamsteer",
                                                                  "beamsteer-ahead"}):
        p.error("--batch must be >= 1, and above 1 only with the strategies beamsteer and "
                "beamsteer-ahead")
    if a.batch > 1:  # checkpoints on whole batches: each rounded up to a multiple of q
        checkpoints = tuple(sorted({c for c in (-(-n // a.batch) * a.batch
                                                for n in checkpoints) if c <= n_max}))
    out = a.out.with_suffix("") if a.out.suffix in (".md", ".json", ".png") else a.out
    return Config(maps=maps, seeds=seeds, strategies=a.strategies, checkpoints=checkpoints,
                  jobs=a.jobs, out=out, quick=a.quick, known_noise=a.noise == "known",
                  noise_fraction=a.noise_sd, acquisition=a.acquisition, batch=a.batch)


def _from_json(path: Path) -> Config:
    """The :class:`Config` an earlier run's JSON was made with (``out`` is that file)."""
    try:
        c = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"--reanalyse: cannot read a run's config from {path}: {exc}")
    return Config(maps=tuple(c["maps"]), seeds=tuple(c["seeds"]),
                  strategies=tuple(c["strategies"]), checkpoints=tuple(c["checkpoints"]),
                  jobs=1, out=path, quick=False, known_noise=c["noise"] == "known",
                  noise_fraction=c["noise_fraction"], acquisition=c["acquisition"],
                  reanalyse=True, batch=c.get("batch", 1))


COST_ORDER = {"botorch-nipv": 0, "botorch": 1, "beamsteer": 2, "beamsteer-ahead": 2,
              "gpcam": 3, "grid": 4, "random": 5}


def _worker_init() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    """Run every task, print the tables, write JSON (after each task), markdown and PNG."""
    cfg = parse_args(argv)
    if cfg.reanalyse:
        print(analysed(cfg, json.loads(cfg.out.read_text())["results"])[2])
        return 0
    from tqdm import tqdm

    if any(s == "gpcam" for s in cfg.strategies):
        try:
            import gpcam  # noqa: F401
        except ImportError:
            sys.exit("gpCAM is missing: pip install gpcam==8.6.1 (or leave out gpcam)")
    info = machine_info()
    started, t0 = datetime.now(UTC), time.perf_counter()
    command = ("python benchmarks/autonomy.py "
               + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    # the slow strategies and high dimensions first, so the workers finish together
    tasks = sorted((Task(m, s, st, cfg.checkpoints, cfg.known_noise, cfg.noise_fraction,
                         cfg.acquisition, cfg.batch) for m in cfg.maps
                    for s in cfg.seeds for st in cfg.strategies),
                   key=lambda t: (COST_ORDER[t.strategy], -MAPS[t.map].dim, t.seed))
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks), unit="run", dynamic_ncols=True, file=sys.stderr)

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        bar.set_postfix_str(f"{r['strategy']} {r['map']} s{r['seed']}: {r['seconds']:.0f} s")
        bar.update(1)
        write_report(cfg, info, results, started, time.perf_counter() - t0, command, False)

    try:
        if cfg.jobs == 1:
            for task in tasks:
                bar.set_description(f"{task.strategy} {task.map}"[:30])
                done(run_task(task, progress=True))
        else:
            with ProcessPoolExecutor(cfg.jobs, mp_context=get_context("spawn"),
                                     initializer=_worker_init) as pool:
                futures = [pool.submit(run_task, t) for t in tasks]
                for fut in as_completed(futures):
                    done(fut.result())
    finally:
        bar.close()
    order = {(t.map, t.seed, t.strategy): i for i, t in enumerate(
        Task(m, s, st, ()) for m in cfg.maps for s in cfg.seeds for st in cfg.strategies)}
    results.sort(key=lambda r: order[(r["map"], r["seed"], r["strategy"])])
    info["loadavg_end"] = list(os.getloadavg())
    info["uptime_end"] = _uptime()
    md, js, png, tables = write_report(cfg, info, results, started,
                                       time.perf_counter() - t0, command, True)
    print(tables)
    print(f"\nwrote {md}, {js} and {png} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
