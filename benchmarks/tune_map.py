"""Tune the ``map`` acquisition on held-out validation maps, not on the benchmark's maps.

An in-process replica of the service loop that ``autonomy.py`` drives over HTTP
(``GPEngine.suggest(1)`` -> measure -> ``ingest`` -> ``refit()`` when ``needs_refit()``; the
same RMSE as the HTTP run), on the random films of ``benchmarks.maps.validation_maps``.
A *variant* is an acquisition plus module-level knobs of ``server.steering.acquisition``:

    python benchmarks/tune_map.py --variants iv:integrated_variance \\
        mv:misfit_variance:MISFIT_SHARE=0.8 --noise learned
    python benchmarks/tune_map.py --dims 2 --variants base:misfit_variance \\
        narrow:misfit_variance:fit.MAP_LENGTHSCALE_PRIOR=0.5/1.0   # the lengthscale prior

Reported per variant: the geometric mean over maps, seeds and checkpoints of its RMSE over
the first variant's, and the N to reach 5% and 2% of the range (seed-mean curves) per map,
with the grid's (mapped by the same engine) for reference. Results: ``benchmarks/out/tune``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.autonomy import (  # noqa: E402
    OUTPUT,
    THRESHOLDS,
    Problem,
    engine_rmse,
    grid_counts,
    grid_points,
    n_to_reach,
)
from benchmarks.maps import SampleMap, validation_maps  # noqa: E402
from clients.http.models import MAP_ERROR_MIN_POINTS_PER_DIM  # noqa: E402

CHECKPOINTS = (10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100, 120, 140, 160, 200)


class ValProblem(Problem):
    """:class:`~benchmarks.autonomy.Problem` on a validation map (own noise stream)."""

    def __init__(self, m: SampleMap, seed: int, n_max: int, known_noise: bool,
                 acquisition: str | None, map_index: int) -> None:
        super().__init__(m, seed, n_max, known_noise, acquisition=acquisition,
                         noise_key=(seed, 1000 + map_index, 7))
        self.extra: dict[str, Any] = {}

    def spec(self) -> dict[str, Any]:
        """The benchmark's spec plus any spec-field knobs (``initial_design=8``)."""
        return {**super().spec(), **self.extra}


_DEFAULTS: dict[str, Any] = {}


def _knob_modules() -> dict[str, Any]:
    """The modules whose knobs a variant names as ``module.KNOB``."""
    from server.steering import engine, fit, optimize

    return {"engine": engine, "fit": fit, "optimize": optimize}


def _knob_value(name: str, now: Any, v: Any) -> Any:
    """A module knob's new value from the command line's, in the type of its current one:
    a tuple takes "+"-separated names (``engine.AHEAD_ACQUISITIONS=a+b``), a lengthscale
    prior "median/log-sd" (``fit.MAP_LENGTHSCALE_PRIOR=0.5/1.0``).

    Raises:
        ValueError: ``v`` is not of that form, with a message naming the knob ``name``.
    """
    from server.steering import fit

    if isinstance(now, fit.LengthscalePrior):
        try:
            median, log_sd = (float(x) for x in str(v).split("/"))
            return fit.LengthscalePrior(median, log_sd)
        except ValueError as exc:  # not two numbers, or not positive and finite
            raise ValueError(f"{name}={v}: expected median/log-sd, two positive numbers "
                             f"(e.g. {name}=0.5/1.0)") from exc
    if isinstance(now, tuple):
        return tuple(str(v).split("+"))
    try:
        return type(now)(v)
    except ValueError as exc:
        raise ValueError(f"{name}={v}: expected {type(now).__name__} (now {now!r})") from exc


def apply_knobs(knobs: dict[str, Any]) -> None:
    """Set module-level knobs of the acquisition module (in this worker process), after
    restoring every knob an earlier task of this worker changed."""
    from server.steering import acquisition

    modules = _knob_modules()
    if not _DEFAULTS:
        _DEFAULTS.update({k: getattr(acquisition, k) for k in dir(acquisition) if k.isupper()})
        for name, module in modules.items():
            _DEFAULTS.update({f"{name}.{k}": getattr(module, k) for k in dir(module)
                              if k.isupper()})
        _DEFAULTS["gradient"] = acquisition.gradient_weights.__defaults__
    for k, v in _DEFAULTS.items():
        if "." in k:
            name, attr = k.split(".")
            setattr(modules[name], attr, v)
        elif k.isupper():
            setattr(acquisition, k, v)
    acquisition.gradient_weights.__defaults__ = _DEFAULTS["gradient"]

    for k, v in knobs.items():
        if k.islower():  # a spec field, see ValProblem.spec
            continue
        if "." in k:  # a knob of the engine or fit module (engine.INTEGRATION_BASE)
            name, attr = k.split(".")
            if name not in modules or not hasattr(modules[name], attr):
                raise SystemExit(f"unknown knob {k}")
            setattr(modules[name], attr, _knob_value(k, getattr(modules[name], attr), v))
            continue
        if k.startswith("GRADIENT_"):
            share, power = acquisition.gradient_weights.__defaults__  # type: ignore[misc]
            if k == "GRADIENT_SHARE":
                share = v
            else:
                power = v
            acquisition.gradient_weights.__defaults__ = (share, power)
        elif not hasattr(acquisition, k):
            raise SystemExit(f"unknown knob {k}")
        else:
            setattr(acquisition, k, v)


def run_loop(p: Problem, checkpoints: tuple[int, ...]) -> dict[str, Any]:
    """The service's loop, in process: ask 1, prepare the next ask while measuring (the
    knob ``lookahead=0`` turns that off), tell, refit when due."""
    from server.steering.engine import GPEngine
    from server.steering.spec import ExperimentSpec

    ahead = p.extra.pop("lookahead", 1)  # as the service: prepare while x is measured
    engine = GPEngine(ExperimentSpec.from_dict(p.spec()))
    rmse: list[float] = []
    estimate: list[float | None] = []  # the engine's own map error estimate (relative)
    for i in range(max(checkpoints)):
        (c,) = engine.suggest(1)
        x = np.array([c.x])
        if ahead:
            engine.prepare(1, x)
        yvar = np.full((1, 1), p.noise_sd**2) if p.known_noise else None
        engine.ingest(x, p.measure(x, i)[:, None], yvar)
        if engine.needs_refit():
            engine.refit()
        if i + 1 in checkpoints:
            rmse.append(p.rmse(engine.posterior(p.T).mean[OUTPUT]))
            err = engine.status().outputs[OUTPUT].map_error
            estimate.append(None if err is None else err.relative)
    return {"rmse": rmse, "estimate": estimate}


def run_grid(p: Problem, checkpoints: tuple[int, ...]) -> dict[str, Any]:
    """The best regular grid for every budget, mapped by the engine."""
    cache: dict[tuple[int, ...], float] = {}
    rmse = []
    for n in checkpoints:
        shape = grid_counts(n, p.map.dim)
        if shape not in cache:
            cache[shape] = engine_rmse(p, grid_points(p.map, n))
        rmse.append(cache[shape])
    return {"rmse": rmse}


def _dim(map_name: str) -> int:
    """A validation map's dimension, from its name (``val-3d-1``)."""
    return int(map_name.split("-")[1].rstrip("d"))


def task(args: tuple[str, int, str, str, dict[str, Any], bool, int, tuple[int, ...]]
         ) -> dict[str, Any]:
    """One (map, seed, variant) run, in a worker process."""
    import torch

    torch.set_num_threads(1)
    map_name, seed, variant, acq, knobs, known, index, cps = args
    apply_knobs(knobs)
    m = validation_maps(range(index % 100 + 1), (_dim(map_name),))[map_name]
    p = ValProblem(m, seed, max(cps), known, None if acq == "grid" else acq, index)
    p.extra = {k: v if isinstance(v, str) else int(v) for k, v in knobs.items()
               if k.islower()}
    t0 = time.perf_counter()
    out = run_grid(p, cps) if acq == "grid" else run_loop(p, cps)
    return {"map": map_name, "seed": seed, "variant": variant, "seconds":
            time.perf_counter() - t0, **out}


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``name:acquisition[:KNOB=value,...]``; a ``module.KNOB`` (``fit.``, ``engine.``)
    is checked here, so that a typo stops the command line, not a worker later.

    Raises:
        argparse.ArgumentTypeError: A malformed variant, or a ``module.KNOB`` that does not
            exist or whose value is not of its form.
    """
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"{text}: expected name:acquisition[:KNOB=value,...]")
    knobs: dict[str, Any] = {}
    if len(parts) > 2 and parts[2]:
        for kv in parts[2].split(","):
            k, eq, v = kv.partition("=")
            if not eq:
                raise argparse.ArgumentTypeError(f"{text}: {kv!r} is not KNOB=value")
            try:
                knobs[k] = float(v)
            except ValueError:  # a string spec field (kernel=matern32)
                knobs[k] = v
            if "." in k:
                _check_module_knob(k, knobs[k])
    return parts[0], parts[1], knobs


def _check_module_knob(k: str, v: Any) -> None:
    name, _, attr = k.partition(".")
    module = _knob_modules().get(name)
    if module is None or not attr.isupper() or not hasattr(module, attr):
        raise argparse.ArgumentTypeError(f"unknown knob {k}")
    try:
        _knob_value(k, getattr(module, attr), v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def summarize(results: list[dict[str, Any]], variants: list[str], maps: list[str],
              cps: tuple[int, ...]) -> str:
    """Markdown: geometric-mean RMSE ratio to the first variant, N to 5% / 2% per map."""
    def curve(m: str, v: str) -> np.ndarray:
        return np.mean([r["rmse"] for r in results if r["map"] == m and r["variant"] == v],
                       axis=0)

    base = variants[0]
    lines = ["| variant | RMSE / " + base + " (geo. mean) | N<=40 | N>40 | "
             "N to 5% / base | N to 2% / base | N to 5% / grid | N to 2% / grid | "
             "maps > grid (5%, 2%) |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    early = np.array(cps) <= 40
    for v in variants:
        logs, ratios = [], {t: ([], []) for t in THRESHOLDS}
        worse = {t: 0 for t in THRESHOLDS}
        for m in maps:
            a, b = curve(m, v), curve(m, base)
            logs.append(np.log(a / b))
            g = curve(m, "grid") if "grid" in variants else None
            for t in THRESHOLDS:
                nv, nb = n_to_reach(cps, a, t), n_to_reach(cps, b, t)
                nv = nv or float(max(cps)) * 1.25  # a bound: never reached
                nb = nb or float(max(cps)) * 1.25
                ratios[t][0].append(nv / nb)
                if g is not None:
                    ng = n_to_reach(cps, g, t) or float(max(cps)) * 1.25
                    ratios[t][1].append(nv / ng)
                    worse[t] += nv > ng + 1e-9
        L = np.array(logs)
        gm = lambda x: float(np.exp(np.mean(np.log(x)))) if len(x) else float("nan")  # noqa: E731
        lines.append(
            f"| {v} | {np.exp(L.mean()):.3f} | {np.exp(L[:, early].mean()):.3f} | "
            f"{np.exp(L[:, ~early].mean()):.3f} | {gm(ratios[0.05][0]):.3f} | "
            f"{gm(ratios[0.02][0]):.3f} | {gm(ratios[0.05][1]):.3f} | "
            f"{gm(ratios[0.02][1]):.3f} | {worse[0.05]}, {worse[0.02]} |")
    return "\n".join(lines)


def map_error_table(results: list[dict[str, Any]], variants: list[str],
                    cps: tuple[int, ...]) -> str:
    """Markdown: how the engine's map error estimate compares with the true RMSE, per
    variant, at the checkpoints from ``10 d`` points on, and how a plan stopping on it (at
    checkpoint resolution) would have done."""
    lines = ["| variant | estimate / true RMSE: median [5%-95%] | stops at 5%: reached, met, "
             "worst true / 5% | stops at 2%: reached, met, worst true / 2% |",
             "|---|---:|---:|---:|"]
    for v in variants:
        # per run, (estimate, true RMSE) at the checkpoints where the estimate is trusted
        trusted = [[(e, t) for n, e, t in zip(cps, r["estimate"], r["rmse"], strict=True)
                    if n >= MAP_ERROR_MIN_POINTS_PER_DIM * _dim(r["map"]) and e is not None]
                   for r in results if r["variant"] == v and "estimate" in r]
        if not trusted:
            continue
        ratios = [e / t for run in trusted for e, t in run if t > 0]
        cells = []
        for thr in THRESHOLDS:
            stops = [next((t for e, t in run if e <= thr), None) for run in trusted]
            hit = [t for t in stops if t is not None]
            cells.append(f"{len(hit)}/{len(stops)}, {sum(t <= thr for t in hit)}, "
                         + (f"{max(hit) / thr:.2f}" if hit else "-"))
        lo, mid, hi = np.percentile(ratios, [5, 50, 95]) if ratios else (np.nan,) * 3
        lines.append(f"| {v} | {mid:.2f} [{lo:.2f}-{hi:.2f}] | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", required=True, type=parse_variant,
                    help="name:acquisition[:KNOB=value,...]; a knob of the acquisition "
                         "module, of engine./fit. (fit.MAP_LENGTHSCALE_PRIOR=median/log-sd), "
                         "or a spec field")
    ap.add_argument("--dims", default="2,3,4")
    ap.add_argument("--maps-per-dim", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--noise", choices=("known", "learned"), default="known")
    ap.add_argument("--n-max", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "tune")
    ap.add_argument("--tag", default="")
    ap.add_argument("--merge", nargs="*", type=Path, default=[],
                    help="earlier result JSONs (same maps, seeds, noise): their variants join "
                         "the table, the first variant of the first file is the base")
    a = ap.parse_args(argv)
    cps = tuple(c for c in CHECKPOINTS if c <= a.n_max)
    dims = tuple(int(d) for d in a.dims.split(","))
    seeds = tuple(int(s) for s in a.seeds.split(","))
    variants: list[tuple[str, str, dict[str, Any]]] = a.variants
    earlier = [json.loads(f.read_text()) for f in a.merge]
    known_names = {v[0] for e in earlier for v in e["variants"]}
    if "grid" not in [v[0] for v in variants] and "grid" not in known_names:
        variants.append(("grid", "grid", {}))
    maps = [f"val-{d}d-{s}" for d in dims for s in range(a.maps_per_dim)]
    tasks = [(m, s, name, acq, knobs, a.noise == "known", k, cps)
             for name, acq, knobs in variants for s in seeds for k, m in enumerate(maps)]
    # a validation map's index seeds its noise; map_index is also its generator seed here
    tasks = [(m, s, name, acq, knobs, known, int(m.rsplit("-", 1)[1]), c)
             for m, s, name, acq, knobs, known, _, c in tasks]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(task, tasks))
    names = [v[0] for e in earlier for v in e["variants"]] + [v[0] for v in variants]
    results = [r for e in earlier for r in e["results"]] + results
    variants = [tuple(v) for e in earlier for v in e["variants"]] + variants
    table = summarize(results, names, maps, cps)
    print(f"noise {a.noise}, maps {maps}, seeds {seeds}, N <= {a.n_max}, "
          f"{time.perf_counter() - t0:.0f} s")
    errors = map_error_table(results, names, cps)
    if errors.count("\n") > 1:
        table += "\n\nThe engine's map error estimate (from 10 d points on):\n\n" + errors
    print(table)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"tune-{a.noise}{'-' + a.tag if a.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"variants": [list(v) for v in variants], "maps": maps, "seeds": seeds,
         "noise": a.noise, "checkpoints": cps, "results": results}, indent=1))
    stem.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
