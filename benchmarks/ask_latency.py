"""Ask latency: how long "where do I measure next?" takes, Beamsteer against its peers.

For every measured-point count N and dimension d, on the same smooth synthetic map:

* Beamsteer in-process (``GPEngine``): ``suggest(q=1)``, ``suggest(q=4)`` (variance, like the
  peers; and ``misfit_variance``, the default of a ``map`` experiment), ``ingest`` of one
  new measurement, and one ``refit()`` (the cost the service pays in the background).
* Beamsteer over HTTP: ``beamsteer serve`` on SQLite in its own process (``--server thread``:
  uvicorn in a thread of this process), asks and tells timed
  on the client with httpx, after the server's model has been fitted on all N points: a
  cold ask (nothing prepared: each is abandoned before the next), a tell, and the ask of a
  beamline's loop (ask -> measure for ``--measure-ms`` -> tell -> ask), which the server
  prepared while the last suggestions were measured (``variance`` and ``misfit_variance``).
* Peers: a plain BoTorch loop (refit from scratch + ``optimize_acqf`` every iteration, and
  the ask alone on a fitted model) and gpCAM's ``GPOptimizer.ask``/``tell``, also its ask
  with numpy's default BLAS threads (in a fresh process), as a gpCAM user gets it.

Ratios are p50 over Beamsteer's in-process p50 of the same operation. Run
``python benchmarks/ask_latency.py --help``; results go to ``benchmarks/out/``.
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
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from contextlib import suppress  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `server` importable
    sys.path.insert(0, str(ROOT))

from clients.http import server_seconds  # noqa: E402

LOWER, UPPER = 0.0, 10.0  # every axis, in mm
NOISE_SD = 0.01  # measurement noise of the synthetic map
TARGET = "intensity"
HTTP_BATCH = 1000  # measurements per POST while loading N points (the server's maximum)
PEER_FIT_SUBSET = 1000  # peers' hyperparameters are fitted on at most this many points
GPCAM_TRAIN_SUBSET = 200  # gpCAM's default training is minutes at N=1000: fit on a subset
EXTRA_POINTS = 400  # measurements kept aside for timed tells and the server's settling
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "ask_latency"


# --- configuration and results ------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What to run (see ``--help``)."""

    sizes: tuple[int, ...]
    dims: tuple[int, ...]
    repeats: int
    row_budget_s: float
    peer_limit_s: float
    http: bool
    peers: bool
    out: Path
    seed: int
    torch_threads: int
    measure_s: float = 0.1
    server: str = "process"


@dataclass
class Row:
    """One timed operation of one scenario.

    Args:
        n: Measured points when timing started.
        d: Dimension.
        what: Human label.
        op: The operation it compares to: ``ask1``, ``ask4``, ``tell`` or ``refit``.
        times_s: Wall times in seconds, one per run (empty when skipped).
        reference: Whether this row is Beamsteer's in-process reference for ``op``.
        skipped: Why it was not timed, or ``None``.
        note: Extra facts worth keeping in the JSON.
        ratio: p50 over Beamsteer's in-process p50 of ``op`` (set by :func:`add_ratios`).
    """

    n: int
    d: int
    what: str
    op: str
    times_s: list[float] = field(default_factory=list)
    reference: bool = False
    skipped: str | None = None
    note: str = ""
    ratio: float | None = None

    @property
    def p50_ms(self) -> float | None:
        """Median in milliseconds."""
        return float(np.percentile(self.times_s, 50)) * 1e3 if self.times_s else None

    @property
    def p95_ms(self) -> float | None:
        """95th percentile in milliseconds (linear interpolation between runs)."""
        return float(np.percentile(self.times_s, 95)) * 1e3 if self.times_s else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"n": self.n, "d": self.d, "what": self.what, "op": self.op,
                "runs": len(self.times_s), "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
                "ratio_vs_beamsteer": self.ratio, "reference": self.reference,
                "skipped": self.skipped, "note": self.note,
                "times_ms": [round(t * 1e3, 3) for t in self.times_s]}


class Progress:
    """A tqdm bar that counts timed rows and says which one runs."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="row", dynamic_ncols=True, file=sys.stderr)

    def start(self, label: str) -> None:
        """Show what runs now."""
        self.bar.set_description(label[:60])

    def done(self) -> None:
        """One row finished."""
        self.bar.update(1)

    def write(self, text: str) -> None:
        """Print above the bar."""
        self.bar.write(text)

    def close(self) -> None:
        """Remove the bar."""
        self.bar.close()


# --- timing helpers -----------------------------------------------------------------------


def collect(run: Callable[[], float], repeats: int, budget_s: float, *, warmup: int = 0,
            min_runs: int = 3, first: float | None = None) -> list[float]:
    """Call ``run`` (which returns its own wall time) up to ``repeats`` times; stop early
    past ``budget_s`` once ``min_runs`` runs are in.

    Args:
        run: One timed run; returns seconds.
        repeats: Most runs.
        budget_s: Wall-clock budget of the row; only ends the row after ``min_runs`` runs.
        warmup: Untimed runs first (one-time costs such as posterior caches).
        min_runs: Fewest runs, whatever the budget.
        first: A run already timed elsewhere (counts as the first).
    """
    for _ in range(warmup):
        run()
    times = [] if first is None else [first]
    start = time.perf_counter() - (first or 0.0)
    while len(times) < repeats:
        times.append(run())
        if len(times) >= min_runs and time.perf_counter() - start > budget_s:
            break
    return times


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn`` as a run for :func:`collect`: its wall time."""
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def sample(fn: Callable[[], object], repeats: int, budget_s: float, **kw: Any) -> list[float]:
    """Wall times of ``fn``: :func:`collect` of :func:`timed`."""
    return collect(timed(fn), repeats, budget_s, **kw)


def first_run_within(fn: Callable[[], object], limit_s: float) -> float | None:
    """Run ``fn`` once in a forked child and return its wall time, or ``None`` (killed)
    when it takes longer than ``limit_s``: a peer that needs minutes per ask is not waited
    for. Raises RuntimeError if the child fails."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        t0 = time.perf_counter()
        fn()
        send.send(time.perf_counter() - t0)

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    send.close()
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            if recv.poll(0.2):
                seconds = float(recv.recv())
                return seconds if seconds <= limit_s else None
            if not proc.is_alive() and not recv.poll(0):
                raise RuntimeError(f"peer failed in its child process (exit {proc.exitcode})")
        return None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()


# --- the synthetic experiment -------------------------------------------------------------


def truth(U: np.ndarray) -> np.ndarray:
    """A smooth map on the unit cube: a sum of sines and a Gaussian bump."""
    d = U.shape[1]
    waves = np.sin(3.0 * U + 0.7 * np.arange(d)).sum(axis=1) / math.sqrt(d)
    return waves + 0.5 * np.exp(-8.0 * ((U - 0.5) ** 2).sum(axis=1))


def make_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy measurements at uniform random positions (spec units: mm)."""
    rng = np.random.default_rng([seed, n, d])
    U = rng.random((n, d))
    y = truth(U) + NOISE_SD * rng.standard_normal(n)
    return LOWER + (UPPER - LOWER) * U, y


def spec_json(d: int, acquisition: str = "variance") -> dict[str, Any]:
    """The experiment spec used in-process and over HTTP."""
    return {"name": f"latency-{d}d",
            "parameters": [{"name": f"x{i + 1}", "lower": LOWER, "upper": UPPER,
                            "units": "mm", "speed": 1.0} for i in range(d)],
            "outputs": [{"name": TARGET}], "goal": "map", "acquisition": acquisition}


# --- Beamsteer in-process ---------------------------------------------------------------


def bench_engine(cfg: Config, X: np.ndarray, y: np.ndarray, n: int,
                 progress: Progress) -> list[Row]:
    """Refit, asks and one-point ingests of ``GPEngine`` at ``n`` measured points."""
    from server.steering.engine import GPEngine
    from server.steering.spec import DEFAULT_ACQUISITION, ExperimentSpec, Goal

    d = X.shape[1]
    rows: list[Row] = []
    engine = GPEngine(ExperimentSpec.from_dict(spec_json(d)))
    engine.ingest(X[:n], y[:n, None])

    progress.start(f"N={n} d={d} beamsteer refit")
    t0 = time.perf_counter()
    status = engine.refit()
    out = status.outputs[TARGET]
    if out.fit_failures or out.fitted_n != n:
        raise RuntimeError(f"engine fit failed: {out.last_error}")
    rows.append(Row(n, d, "beamsteer refit() (background)", "refit",
                    [time.perf_counter() - t0], reference=True,
                    note="fit on a 2000-point subset above 2000, then O(N^3) rebuild"))
    progress.done()

    for q in (1, 4):
        progress.start(f"N={n} d={d} beamsteer suggest q={q}")
        rows.append(Row(n, d, f"beamsteer suggest q={q} (variance)", f"ask{q}",
                        sample(lambda q=q: engine.suggest(q), cfg.repeats, cfg.row_budget_s,
                               warmup=1), reference=True))
        progress.done()

    map_acq = DEFAULT_ACQUISITION[Goal.map].value
    ivr = GPEngine(ExperimentSpec.from_dict(spec_json(d, map_acq)),
                   hyperparameters=engine.hyperparameters())
    ivr.ingest(X[:n], y[:n, None])
    for q in (1, 4):
        progress.start(f"N={n} d={d} beamsteer map q={q}")
        rows.append(Row(n, d, f"beamsteer suggest q={q} ({map_acq})", f"ask{q}",
                        sample(lambda q=q: ivr.suggest(q), cfg.repeats, cfg.row_budget_s,
                               warmup=1), note="the default acquisition of goal=map"))
        progress.done()

    progress.start(f"N={n} d={d} beamsteer ingest")
    fresh = iter(range(n, len(X)))

    def ingest_one() -> None:
        i = next(fresh)
        engine.ingest(X[i:i + 1], y[i:i + 1, None])

    rows.append(Row(n, d, "beamsteer ingest 1 point", "tell",
                    sample(ingest_one, cfg.repeats, cfg.row_budget_s), reference=True,
                    note="each run grows N by one (incremental Cholesky)"))
    progress.done()
    return rows


# --- Beamsteer over HTTP ----------------------------------------------------------------


def _live_server(data_dir: Path):  # -> server.live.LiveServer
    """The service under uvicorn in this process, on SQLite in ``data_dir``."""
    from server.live import LiveServer
    from server.settings import Settings

    return LiveServer(Settings(database_url=f"sqlite:///{data_dir / 'beamsteer.db'}",
                               data_dir=data_dir, log_json=False, log_level="warning"))


def _server(cfg: Config, data_dir: Path) -> Any:
    """The server the HTTP rows talk to (``--server``)."""
    if cfg.server == "process":
        from server.live import ServeProcess

        return ServeProcess(data_dir, cfg.torch_threads)
    return _live_server(data_dir)


def _positions(X: np.ndarray, rows: range) -> list[dict[str, Any]]:
    return [{"position": {f"x{k + 1}": float(v) for k, v in enumerate(X[i])}} for i in rows]


def _post_measurements(client: Any, eid: str, X: np.ndarray, y: np.ndarray,
                       rows: range) -> None:
    items = _positions(X, rows)
    for item, i in zip(items, rows, strict=True):
        item["values"] = {TARGET: float(y[i])}
    r = client.post(f"/api/v1/experiments/{eid}/measurements", json={"measurements": items})
    r.raise_for_status()


def _settle(client: Any, eid: str, X: np.ndarray, y: np.ndarray, n: int,
            timeout_s: float = 900.0) -> int:
    """Wait until the server's model is fitted on every measurement and no refit runs.

    Refits are scheduled only when measurements arrive, so when a refit that started early
    (on the first batch) has finished on fewer points than were posted meanwhile, one more
    measurement is posted to trigger the refit on all of them.

    Returns:
        The number of measurements now stored.
    """
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    while time.monotonic() < deadline:
        model = client.get(f"/api/v1/experiments/{eid}").json()["model"]
        out = model["outputs"][TARGET]
        if out["fit_failures"]:
            raise RuntimeError(f"server fit failed: {out['last_error']}")
        if not model["refitting"] and out["fitted_n"] == n:
            return n
        if model["refitting"] or out["fitted_n"] == 0:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 1.0:  # idle and stale: trigger the refit at n+1
            _post_measurements(client, eid, X, y, range(n, n + 1))
            n, idle_since = n + 1, None
        time.sleep(0.2)
    raise RuntimeError("the server's model did not settle in time")


def _loaded_experiment(client: Any, acquisition: str, X: np.ndarray, y: np.ndarray,
                       n: int) -> tuple[str, int]:
    """A new experiment holding the first ``n`` points, its model fitted on all of them:
    ``(id, measurements stored)``."""
    r = client.post("/api/v1/experiments", json=spec_json(X.shape[1], acquisition))
    r.raise_for_status()
    eid = r.json()["id"]
    for start in range(0, n, HTTP_BATCH):
        _post_measurements(client, eid, X, y, range(start, min(n, start + HTTP_BATCH)))
    return eid, _settle(client, eid, X, y, n)


def bench_http(cfg: Config, X: np.ndarray, y: np.ndarray, n: int,
               progress: Progress) -> list[Row]:
    """Asks and one-point tells over HTTP against a fresh server at ``n`` measurements."""
    import httpx

    d = X.shape[1]
    rows: list[Row] = []
    progress.start(f"N={n} d={d} http: load and fit")
    with tempfile.TemporaryDirectory(prefix="beamsteer-bench-") as tmp, \
            _server(cfg, Path(tmp)) as server, \
            httpx.Client(base_url=server.url, timeout=600) as client:
        eid, stored = _loaded_experiment(client, "variance", X, y, n)
        base = f"/api/v1/experiments/{eid}"

        for q in (1, 4):
            progress.start(f"N={n} d={d} http suggestions n={q}")

            def ask(q: int = q) -> float:
                t0 = time.perf_counter()
                r = client.post(f"{base}/suggestions", json={"n": q})
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                for s in r.json()["suggestions"]:  # keep the pending set empty (untimed)
                    client.delete(f"{base}/suggestions/{s['id']}").raise_for_status()
                return elapsed

            rows.append(Row(stored, d, f"http POST suggestions n={q}", f"ask{q}",
                            collect(ask, cfg.repeats, cfg.row_budget_s, warmup=1),
                            note="client wall time; each suggestion abandoned (DELETE, "
                                 "untimed) so that none is pending at the next ask"))
            progress.done()

        progress.start(f"N={n} d={d} http measurements")
        fresh = iter(range(stored, len(X)))

        def tell() -> None:
            i = next(fresh)
            _post_measurements(client, eid, X, y, range(i, i + 1))

        rows.append(Row(stored, d, "http POST measurements (1 point)", "tell",
                        sample(tell, cfg.repeats, cfg.row_budget_s),
                        note="committed to SQLite before the reply, then ingested"))
        progress.done()

        # A beamline's loop: ask, measure there (the motors move and the detector counts:
        # cfg.measure_s), tell, ask again. The ask after the tell is timed: the server had
        # the measuring time to prepare it (GPEngine.prepare). Also on a map experiment
        # with the map default, misfit_variance (loaded alike).
        exps = {"variance": eid,
                "misfit_variance": _loaded_experiment(client, "misfit_variance", X, y, n)[0]}
        for acq, exp_id in exps.items():
            for q in (1, 4):
                progress.start(f"N={n} d={d} http loop {acq} n={q}")
                wall, server_s = _loop(client, f"/api/v1/experiments/{exp_id}", q, cfg)
                what = f"http ask n={q} after a tell, {cfg.measure_s * 1e3:g} ms measuring ({acq})"
                rows.append(Row(stored, d, what, f"ask{q}-loop", wall,
                                note=f"POST suggestions n={q} right after the tell of the last "
                                     f"{q}; the measuring time (sleep) and the tell are untimed"))
                rows.append(Row(stored, d, f"  of which the server (Server-Timing), n={q} ({acq})",
                                f"ask{q}-loop-server", server_s,
                                note="the server's own time to the reply's start, from its "
                                     "Server-Timing header; the rest is the client, the "
                                     "loopback and the reply's body"))
                progress.done()
    return rows


def _loop(client: Any, base: str, q: int, cfg: Config) -> tuple[list[float], list[float]]:
    """Wall times of the asks of an ask -> measure -> tell loop (each grows N by ``q``), and
    the server's part of each."""
    batch = client.post(f"{base}/suggestions", json={"n": q}).json()["suggestions"]
    server: list[float] = []

    def step() -> float:
        nonlocal batch
        time.sleep(cfg.measure_s)
        items = []
        for s in batch:
            pos = s["position"]
            x = np.array([[pos[f"x{k + 1}"] for k in range(len(pos))]])
            U = (x - LOWER) / (UPPER - LOWER)
            items.append({"position": pos, "values": {TARGET: float(truth(U)[0])},
                          "suggestion_id": s["id"]})
        client.post(f"{base}/measurements", json={"measurements": items}).raise_for_status()
        t0 = time.perf_counter()
        r = client.post(f"{base}/suggestions", json={"n": q})
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        batch = r.json()["suggestions"]
        took = server_seconds(r)
        if took is None:
            raise RuntimeError(f"the server stated no time: Server-Timing "
                               f"{r.headers.get('server-timing')!r}")
        server.append(took)
        return elapsed

    try:
        # the first step teaches the server how long this loop measures (lookahead_room)
        wall = collect(step, cfg.repeats, cfg.row_budget_s, warmup=1)
        return wall, server[-len(wall):]
    finally:
        for s in batch:
            client.delete(f"{base}/suggestions/{s['id']}")


# --- peer: a plain BoTorch loop ---------------------------------------------------------


def _botorch_model(X: np.ndarray, y: np.ndarray) -> Any:
    import torch
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize

    d = X.shape[1]
    bounds = torch.tensor([[LOWER] * d, [UPPER] * d], dtype=torch.float64)
    return SingleTaskGP(torch.as_tensor(X), torch.as_tensor(y).unsqueeze(-1),
                        input_transform=Normalize(d, bounds=bounds),
                        outcome_transform=Standardize(m=1))


def _botorch_fit(model: Any) -> None:
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))


def _botorch_ask(model: Any, q: int) -> Any:
    """PosteriorStandardDeviation for one point; joint qUCB (beta 4) for a batch, since the
    analytic PSD takes no batch and qNIPV's fantasy models leak in gpytorch 1.15.2."""
    import torch
    from botorch.acquisition import PosteriorStandardDeviation, qUpperConfidenceBound
    from botorch.optim import optimize_acqf

    d = model.train_inputs[0].shape[-1]
    bounds = torch.tensor([[LOWER] * d, [UPPER] * d], dtype=torch.float64)
    acq = PosteriorStandardDeviation(model) if q == 1 else qUpperConfidenceBound(model, beta=4.0)
    x, _ = optimize_acqf(acq, bounds, q=q, num_restarts=10, raw_samples=512)
    return x


def bench_botorch(cfg: Config, X: np.ndarray, y: np.ndarray, n: int,
                  progress: Progress) -> list[Row]:
    """A plain loop's ask (fit from scratch + optimize_acqf) and the ask on a fitted model."""
    d = X.shape[1]
    rows: list[Row] = []
    fitted: list[Any] = []

    for q in (1, 4):
        progress.start(f"N={n} d={d} botorch fit+ask q={q}")

        def full(q: int = q) -> None:
            model = _botorch_model(X[:n], y[:n])
            _botorch_fit(model)
            _botorch_ask(model, q)
            fitted[:] = [model]

        what = f"botorch loop ask q={q} (refit + optimize_acqf)"
        if rows and rows[-1].skipped:  # the fit alone already took too long at q=1
            rows.append(Row(n, d, what, f"ask{q}", skipped=rows[-1].skipped))
            progress.done()
            continue
        first = first_run_within(full, cfg.peer_limit_s)
        if first is None:
            rows.append(Row(n, d, what, f"ask{q}",
                            skipped=f"skipped (> {cfg.peer_limit_s:g} s)"))
        else:
            rows.append(Row(n, d, what, f"ask{q}",
                            sample(full, cfg.repeats, cfg.row_budget_s, first=first)))
        progress.done()

    from_subset = not fitted
    if from_subset:  # no full fit finished in time: hyperparameters from a subset
        progress.start(f"N={n} d={d} botorch subset fit")
        idx = np.random.default_rng([cfg.seed, n, d]).choice(n, min(n, PEER_FIT_SUBSET),
                                                           replace=False)
        small = _botorch_model(X[idx], y[idx])
        _botorch_fit(small)
        model = _botorch_model(X[:n], y[:n])
        state = {k: v for k, v in small.state_dict().items()
                 if not k.startswith(("outcome_transform", "input_transform"))}
        model.load_state_dict(state, strict=False)
        fitted.append(model)
    model = fitted[0]
    model.eval()
    for q in (1, 4):
        progress.start(f"N={n} d={d} botorch ask q={q}")
        rows.append(Row(n, d, f"botorch ask q={q}, model already fitted", f"ask{q}",
                        sample(lambda q=q: _botorch_ask(model, q), cfg.repeats,
                               cfg.row_budget_s, warmup=1),
                        note=f"hyperparameters fitted on {min(n, PEER_FIT_SUBSET)} points "
                             "(the full fit was skipped)" if from_subset else ""))
        progress.done()
    return rows


# --- peer: gpCAM ------------------------------------------------------------------------


def bench_gpcam(cfg: Config, X: np.ndarray, y: np.ndarray, n: int,
                progress: Progress) -> list[Row]:
    """gpCAM 8.6 ``GPOptimizer``: ``ask`` (variance, its default global optimizer) and
    ``tell`` of one point (rank-1 update)."""
    from gpcam import GPOptimizer

    d = X.shape[1]
    rows: list[Row] = []
    bounds = np.array([[LOWER, UPPER]] * d)
    noise = np.full(len(X), NOISE_SD**2)
    progress.start(f"N={n} d={d} gpcam train (untimed)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "hyperparameters initialized to ones", bounds
        idx = np.random.default_rng([cfg.seed, n, d]).choice(
            n, min(n, GPCAM_TRAIN_SUBSET), replace=False)
        small = GPOptimizer(X[idx], y[idx], noise_variances=noise[idx])
        small.train()
        gp = GPOptimizer(X[:n], y[:n], noise_variances=noise[:n],
                         init_hyperparameters=small.hyperparameters)

        def ask() -> None:
            gp.ask(bounds, n=1, acquisition_function="variance")

        progress.start(f"N={n} d={d} gpcam ask")
        what = "gpcam ask n=1 (variance)"
        first = first_run_within(ask, cfg.peer_limit_s)
        if first is None:
            rows.append(Row(n, d, what, "ask1", skipped=f"skipped (> {cfg.peer_limit_s:g} s)"))
        else:
            rows.append(Row(n, d, what, "ask1", sample(ask, cfg.repeats, cfg.row_budget_s,
                                                       first=first),
                            note=f"hyperparameters trained on {min(n, GPCAM_TRAIN_SUBSET)} "
                                 "points (untimed)"))
            progress.start(f"N={n} d={d} gpcam ask, default BLAS threads")
            rows.append(_gpcam_default_threads(cfg, X[:n], y[:n], noise[:n],
                                               np.asarray(small.hyperparameters), bounds))
        progress.done()

        progress.start(f"N={n} d={d} gpcam tell")
        fresh = iter(range(n, len(X)))

        def tell() -> None:
            i = next(fresh)
            gp.tell(X[i:i + 1], y[i:i + 1], noise_variances=noise[i:i + 1])

        rows.append(Row(n, d, "gpcam tell 1 point", "tell",
                        sample(tell, cfg.repeats, cfg.row_budget_s),
                        note="each run grows N by one"))
        progress.done()
    return rows


_GPCAM_CHILD = """
import json, sys, time, warnings
import numpy as np
from gpcam import GPOptimizer
a = np.load(sys.argv[1])
repeats, budget = int(sys.argv[2]), float(sys.argv[3])
warnings.simplefilter("ignore")
gp = GPOptimizer(a["X"], a["y"], noise_variances=a["noise"], init_hyperparameters=a["hp"])
times, start = [], time.perf_counter()
while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget):
    t0 = time.perf_counter()
    gp.ask(a["bounds"], n=1, acquisition_function="variance")
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def _gpcam_default_threads(cfg: Config, X: np.ndarray, y: np.ndarray, noise: np.ndarray,
                           hp: np.ndarray, bounds: np.ndarray) -> Row:
    """gpCAM's ask as a user gets it out of the box: in a fresh process with numpy's
    default BLAS threads (this benchmark pins one thread for every contender, which is
    gpCAM's best setting on a 2-core machine: 3-5x faster there)."""
    n, d = X.shape
    what = "gpcam ask n=1 (variance), numpy's default BLAS threads"
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "OMP_WAIT_POLICY")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, X=X, y=y, noise=noise, hp=hp, bounds=bounds)
        try:
            out = subprocess.run([sys.executable, "-c", _GPCAM_CHILD, str(path),
                                  str(cfg.repeats), str(cfg.row_budget_s)], env=env,
                                 capture_output=True, text=True, check=True,
                                 timeout=cfg.peer_limit_s + 3 * cfg.row_budget_s)
        except subprocess.TimeoutExpired:
            return Row(n, d, what, "ask1-default",
                       skipped=f"skipped (> {cfg.peer_limit_s + 3 * cfg.row_budget_s:g} s)")
    return Row(n, d, what, "ask1-default", json.loads(out.stdout.strip().splitlines()[-1]),
               note="a fresh process without OPENBLAS_NUM_THREADS; same data and "
                    "hyperparameters as the row above")


# --- report -------------------------------------------------------------------------------


def add_ratios(rows: list[Row]) -> None:
    """Set each row's ratio: its p50 over Beamsteer's in-process p50 of the same operation
    (rows of one scenario)."""
    refs = {r.op: r.p50_ms for r in rows if r.reference}
    for r in rows:
        ref = refs.get(r.op)
        if r.p50_ms is not None and ref:
            r.ratio = r.p50_ms / ref


def headline(rows: list[Row]) -> str | None:
    """gpCAM's ask over Beamsteer's HTTP ask in a beamline's loop (q=1, variance, the
    acquisition gpCAM's ask runs), or ``None`` when a row is missing."""
    loop = next((r for r in rows if r.op == "ask1-loop" and r.what.endswith("(variance)")),
                None)
    pinned = next((r for r in rows if r.op == "ask1" and r.what.startswith("gpcam")), None)
    default = next((r for r in rows if r.op == "ask1-default"), None)
    if loop is None or pinned is None or not loop.p50_ms or not pinned.p50_ms:
        return None
    text = (f"gpCAM ask / Beamsteer's HTTP loop ask (q=1, variance): "
            f"**{pinned.p50_ms / loop.p50_ms:.1f}x** with one BLAS thread "
            f"({pinned.p50_ms:.1f} / {loop.p50_ms:.2f} ms)")
    if default is not None and default.p50_ms:
        text += (f", {default.p50_ms / loop.p50_ms:.1f}x with numpy's default BLAS threads "
                 f"({default.p50_ms:.0f} ms)")
    return text


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def table(rows: list[Row], markdown: bool) -> str:
    """One scenario's rows as a markdown or plain-text table."""
    head = ["N", "d", "what", "runs", "p50 ms", "p95 ms", "ratio vs Beamsteer"]
    body = []
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        if r.skipped:
            body.append([str(r.n), str(r.d), r.what, "0", r.skipped, "-", "-"])
        else:
            body.append([str(r.n), str(r.d), r.what, str(len(r.times_s)), _fmt(r.p50_ms),
                         _fmt(r.p95_ms), ratio])
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---:", "---:", "---", "---:", "---:", "---:", "---:"]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i == 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])]
                     + [fmt.format(*b) for b in body])


def machine_info() -> dict[str, Any]:
    """CPU, threads, load and library versions."""
    import torch

    cpu = ""
    with suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    versions = {}
    for pkg in ("torch", "botorch", "gpytorch", "numpy", "scipy", "fastapi", "uvicorn",
                "httpx", "sqlalchemy", "gpcam", "fvgp"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_start": list(os.getloadavg()), "versions": versions,
            "kernels": numeric_kernels()}


def numeric_kernels() -> dict[str, Any]:
    """Which CPU kernels the numerics run on: the BLAS libraries' own choice (OpenBLAS
    picks per CPU, e.g. Haswell or SkylakeX) and torch's vector unit. Runs on two machines
    can differ in the last bits through these, and a sequential design carries that on."""
    import torch

    blas: list[dict[str, Any]] = []
    with suppress(ImportError):
        from threadpoolctl import threadpool_info

        blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture",
                                       "num_threads")} for i in threadpool_info()]
    return {"blas": blas, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def write_report(cfg: Config, info: dict[str, Any], scenarios: list[list[Row]],
                 started: datetime, seconds: float, command: str) -> tuple[Path, Path]:
    """Write ``<out>.md`` and ``<out>.json``."""
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    md_path, json_path = cfg.out.with_suffix(".md"), cfg.out.with_suffix(".json")
    v = info["versions"]
    lines = [f"# Ask latency ({started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min)", "",
             f"`{command}`", "",
             f"{info['cpu'] or 'CPU'}, {info['cpu_count']} cores, torch threads "
             f"{info['torch_threads']}, OPENBLAS_NUM_THREADS={info['OPENBLAS_NUM_THREADS']}, "
             f"OMP_WAIT_POLICY={info['OMP_WAIT_POLICY']}, load average at start "
             f"{info['loadavg_start'][0]:.2f}; torch {v['torch']}, botorch {v['botorch']}, "
             f"gpytorch {v['gpytorch']}, gpCAM {v['gpcam']}. HTTP rows: "
             + ("`beamsteer serve` in its own process." if cfg.server == "process" else
                "uvicorn in a thread of the benchmark's process."), ""]
    for rows in scenarios:
        lines += [f"## N = {rows[0].n}, d = {rows[0].d}", "", table(rows, markdown=True), ""]
        if (text := headline(rows)) is not None:
            lines += [text + ".", ""]
    md_path.write_text("\n".join(lines))
    json_path.write_text(json.dumps({
        "started_at": started.isoformat(), "seconds": seconds, "command": command,
        "machine": info,
        "config": {"sizes": cfg.sizes, "dims": cfg.dims, "repeats": cfg.repeats,
                   "row_budget_s": cfg.row_budget_s, "peer_limit_s": cfg.peer_limit_s,
                   "http": cfg.http, "peers": cfg.peers, "seed": cfg.seed,
                   "server": cfg.server, "measure_s": cfg.measure_s},
        "rows": [r.to_json() for rows in scenarios for r in rows]}, indent=2))
    return md_path, json_path


# --- main ---------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line to :class:`Config`."""
    from server.settings import Settings

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults take about 15 minutes on a 2-core VM; --quick about 2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="N=100,1000, d=2, 5 repeats, 5 s per row (overrides the three)")
    p.add_argument("--sizes", type=_ints, default=(100, 1000, 5000), help="measured points N")
    p.add_argument("--dims", type=_ints, default=(2, 4), help="dimensions d")
    p.add_argument("--repeats", type=int, default=10, help="most runs per timed row")
    p.add_argument("--row-budget", type=float, default=15.0,
                   help="seconds per row after which it stops (at least 3 runs)")
    p.add_argument("--peer-limit", type=float, default=60.0,
                   help="a peer whose first ask takes longer is skipped at that N")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP scenario")
    p.add_argument("--no-peers", action="store_true", help="skip BoTorch and gpCAM")
    p.add_argument("--torch-threads", type=int, default=Settings().torch_threads,
                   help="torch threads (the service's setting)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure-ms", type=float, default=100.0,
                   help="measuring time of the HTTP loop rows (motors and detector)")
    p.add_argument("--server", choices=("process", "thread"), default="process",
                   help="the HTTP rows' server: `beamsteer serve` in its own process, as "
                        "deployed, or uvicorn in a thread of this process (it then shares "
                        "the interpreter with the client)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output path without suffix: writes .md and .json")
    a = p.parse_args(argv)
    sizes, dims, repeats, budget = a.sizes, a.dims, a.repeats, a.row_budget
    if a.quick:
        sizes, dims, repeats, budget = (100, 1000), (2,), 5, 5.0
    if repeats < 3 or repeats > EXTRA_POINTS // 2:
        p.error(f"--repeats must be in [3, {EXTRA_POINTS // 2}]")
    return Config(sizes=sizes, dims=dims, repeats=repeats, row_budget_s=budget,
                  peer_limit_s=a.peer_limit, http=not a.no_http, peers=not a.no_peers,
                  out=a.out.with_suffix("") if a.out.suffix in (".md", ".json") else a.out,
                  seed=a.seed, torch_threads=a.torch_threads, measure_s=a.measure_ms / 1e3,
                  server=a.server)


def run_scenario(cfg: Config, n: int, d: int, progress: Progress) -> list[Row]:
    """Every timed row of one (N, d)."""
    X, y = make_data(n + EXTRA_POINTS, d, cfg.seed)
    rows = bench_engine(cfg, X, y, n, progress)
    if cfg.http:
        rows += bench_http(cfg, X, y, n, progress)
    if cfg.peers:
        rows += bench_botorch(cfg, X, y, n, progress)
        rows += bench_gpcam(cfg, X, y, n, progress)
    add_ratios(rows)
    return rows


def _warm_up() -> None:
    """Pay the one-time costs (imports, first torch ops) before anything is timed."""
    from server.steering.engine import GPEngine
    from server.steering.spec import ExperimentSpec

    X, y = make_data(20, 2, 1)
    engine = GPEngine(ExperimentSpec.from_dict(spec_json(2)))
    engine.ingest(X, y[:, None])
    engine.refit()
    engine.suggest(2)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print one table per scenario, write markdown and JSON."""
    cfg = parse_args(argv)
    import torch

    torch.set_num_threads(cfg.torch_threads)
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*",
                            category=DeprecationWarning)
    if cfg.peers:
        try:
            import gpcam  # noqa: F401
        except ImportError:
            sys.exit("gpCAM is missing: pip install gpcam==8.6.1 (or run with --no-peers)")
    info = machine_info()
    started, t0 = datetime.now(UTC), time.perf_counter()
    per = 6 + (7 if cfg.http else 0) + (7 if cfg.peers else 0)
    progress = Progress(per * len(cfg.sizes) * len(cfg.dims))
    _warm_up()
    scenarios = []
    try:
        for d in cfg.dims:
            for n in cfg.sizes:
                rows = run_scenario(cfg, n, d, progress)
                scenarios.append(rows)
                progress.write(f"\nN = {n}, d = {d}\n{table(rows, markdown=False)}")
                if (text := headline(rows)) is not None:
                    progress.write(text.replace("**", ""))
    finally:
        progress.close()
    info["loadavg_end"] = list(os.getloadavg())
    command = "python benchmarks/ask_latency.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv)
    md, js = write_report(cfg, info, scenarios, started, time.perf_counter() - t0,
                          command.strip())
    print(f"\nwrote {md} and {js} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
