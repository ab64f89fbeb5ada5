"""Engine fast paths: ``GPEngine`` before and after, interleaved in one process.

The baseline is the steering package at a git revision (default :data:`BASELINE_REF`), loaded
under another package name next to the working tree's, so that both engines run in the same
process on the same data and hyperparameters, timed alternately (A, B, B, A, ...) and
reported as medians: on a shared 2-core VM the load changes within seconds, so only
interleaved numbers compare. Sections:

* ``suggest``: ``GPEngine.suggest(q)`` (variance and integrated variance) at each N and d.
* ``ingest``: one new measurement per run (each run grows N by one).
* ``accuracy``: posterior mean against the exact GP (and against the truth) on a grid.
* ``memory``: peak resident memory of a fresh process that loads N points and answers asks.
* ``refit``: one ``refit()`` (before/after), and p50/p99 of ``suggest(1)`` while refits
  run in a background thread.

Run ``python benchmarks/engine_fastpaths.py --help``; results go to ``benchmarks/out/``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from ask_latency import TARGET, make_data, spec_json, truth  # noqa: E402

BASELINE_REF = "0e446c6"  # the engine before this work (branch point of `perf`)
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "engine_fastpaths"
HP_SUBSET = 1000  # hyperparameters of a scenario are fitted once, on this many points
GRID = 50  # accuracy grid per axis (2-D)


def log(msg: str) -> None:
    """Progress on stderr, with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- two engines in one process ----------------------------------------------------------


def load_baseline(ref: str) -> tuple[ModuleType, ModuleType]:
    """``(engine, spec)`` modules of ``server/steering`` at git revision ``ref``, imported
    as package ``bsl_server.steering`` (its imports rewritten) from a temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix="bsl_"))
    pkg = tmp / "bsl_server" / "steering"
    pkg.mkdir(parents=True)
    (tmp / "bsl_server" / "__init__.py").write_text("")
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:server/steering"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "show", f"{ref}:server/steering/{name}"], cwd=ROOT,
                                  check=True, capture_output=True, text=True).stdout
            (pkg / name).write_text(text.replace("server.steering", "bsl_server.steering"))
    sys.path.insert(0, str(tmp))
    return (importlib.import_module("bsl_server.steering.engine"),
            importlib.import_module("bsl_server.steering.spec"))


def load_current() -> tuple[ModuleType, ModuleType]:
    """``(engine, spec)`` modules of the working tree."""
    return (importlib.import_module("server.steering.engine"),
            importlib.import_module("server.steering.spec"))


def hyperparameters(d: int, seed: int) -> dict[str, Any]:
    """Fitted once per dimension on :data:`HP_SUBSET` points, shared by every engine."""
    from server.steering.engine import GPEngine
    from server.steering.spec import ExperimentSpec

    X, y = make_data(HP_SUBSET, d, seed + 1)
    e = GPEngine(ExperimentSpec.from_dict(spec_json(d)))
    e.ingest(X, y[:, None])
    e.refit()
    return e.hyperparameters()


def engine(mods: tuple[ModuleType, ModuleType], d: int, acq: str, hp: dict[str, Any],
           X: np.ndarray, y: np.ndarray) -> Any:
    """A warm-started engine of one version with ``X, y`` ingested."""
    eng_mod, spec_mod = mods
    e = eng_mod.GPEngine(spec_mod.ExperimentSpec.from_dict(spec_json(d, acq)),
                         hyperparameters=hp)
    e.ingest(X, y[:, None])
    return e


def interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                budget_s: float) -> dict[str, list[float]]:
    """Wall times of each function, called in turn (order reversed every round); stops after
    ``budget_s`` once every function has 3 runs. One untimed warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    start = time.perf_counter()
    for r in range(repeats):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def ms(ts: list[float], pct: float = 50) -> float:
    """Percentile in milliseconds."""
    return float(np.percentile(ts, pct)) * 1e3


def fmt(v: float | None) -> str:
    """Milliseconds, 3 significant digits."""
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


# --- sections ----------------------------------------------------------------------------


def bench_suggest(a: argparse.Namespace, base: Any, cur: Any, rows: list[dict]) -> None:
    """Suggest and ingest latency, before/after interleaved, per (d, N, acquisition)."""
    for d, sizes in ((2, a.sizes), (4, a.sizes_4d)):
        if not sizes:
            continue
        hp = hyperparameters(d, a.seed)
        for n in sizes:
            X, y = make_data(n + 200, d, a.seed)
            for acq in a.acquisitions:
                _scenario(a, base if n <= a.baseline_max_n else None, cur, d, n, acq, hp, X,
                          y, rows, ingest=acq == a.acquisitions[0])


def _scenario(a: argparse.Namespace, base: Any, cur: Any, d: int, n: int, acq: str,
              hp: dict[str, Any], X: np.ndarray, y: np.ndarray, rows: list[dict], *,
              ingest: bool) -> None:
    log(f"d={d} N={n} {acq}: building engines")
    t0 = time.perf_counter()
    engines = {"new": engine(cur, d, acq, hp, X[:n], y[:n])}
    built = f"new {time.perf_counter() - t0:.1f} s"
    if base is not None:
        t0 = time.perf_counter()
        engines["base"] = engine(base, d, acq, hp, X[:n], y[:n])
        built += f", baseline {time.perf_counter() - t0:.1f} s"
    log(f"  built: {built}")
    for q in a.qs if d == 2 else (4,):
        log(f"  suggest q={q}")
        t = interleaved({k: partial(e.suggest, q) for k, e in engines.items()},
                        a.repeats, a.budget)
        rows.append(_row(f"suggest q={q} ({acq})", n, d, t))
        log(f"  -> {_brief(rows[-1])}")
    if ingest:
        it = {k: iter(range(n, n + 200)) for k in engines}

        def one(key: str) -> None:
            i = next(it[key])
            engines[key].ingest(X[i:i + 1], y[i:i + 1, None])

        log("  ingest 1 point")
        t = interleaved({k: partial(one, k) for k in engines}, min(a.repeats * 3, 60),
                        a.budget)
        rows.append(_row("ingest 1 point", n, d, t))
        log(f"  -> {_brief(rows[-1])}")


def _row(what: str, n: int, d: int, t: dict[str, list[float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"what": what, "n": n, "d": d, "runs": len(t["new"]),
                           "new_p50": ms(t["new"]), "new_p95": ms(t["new"], 95),
                           "base_p50": ms(t["base"]) if "base" in t else None,
                           "times_ms": {k: [round(v * 1e3, 3) for v in ts]
                                        for k, ts in t.items()}}
    row["speedup"] = (row["base_p50"] / row["new_p50"]) if row["base_p50"] else None
    return row


def _brief(r: dict[str, Any]) -> str:
    s = f"new p50 {fmt(r['new_p50'])} ms (p95 {fmt(r['new_p95'])})"
    if r["base_p50"] is not None:
        s += f", baseline p50 {fmt(r['base_p50'])} ms, {r['speedup']:.1f}x"
    return s


def suggest_table(rows: list[dict]) -> str:
    """Markdown table of the suggest/ingest rows."""
    out = ["| d | N | what | runs | baseline p50 ms | new p50 ms | new p95 ms | speedup |",
           "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        out.append(f"| {r['d']} | {r['n']:,} | {r['what']} | {r['runs']} | "
                   f"{fmt(r['base_p50'])} | {fmt(r['new_p50'])} | {fmt(r['new_p95'])} | {sp} |")
    return "\n".join(out)


def grid2d() -> np.ndarray:
    """A ``GRID x GRID`` grid over the 2-D domain (spec units)."""
    g = np.linspace(0.0, 10.0, GRID)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def exact_mean(hp: dict[str, Any], X: np.ndarray, y: np.ndarray, Xq: np.ndarray) -> np.ndarray:
    """The exact GP's posterior mean at ``Xq`` with the shared hyperparameters, by one dense
    in-place Cholesky (scipy, float64): the reference at sizes the old engine cannot reach."""
    import scipy.linalg as sla
    import torch

    from server.steering.gp import kernel_matrix

    h = hp[TARGET]
    ls = torch.tensor(h["lengthscales_normalized"], dtype=torch.float64)
    U, Uq = torch.as_tensor(X / 10.0), torch.as_tensor(Xq / 10.0)
    ys = (y - h["y_mean"]) / h["y_std"] - h["mean_constant_standardized"]
    K = np.empty((len(U), len(U)))
    for s in range(0, len(U), 1000):  # in row blocks: the kernel's temporaries stay small
        K[s:s + 1000] = kernel_matrix(h["kernel"], U[s:s + 1000], U, ls,
                                      h["outputscale_standardized"]).numpy()
    K[np.diag_indices_from(K)] += h["noise_variance_standardized"]
    c = sla.cho_factor(K, lower=True, overwrite_a=True, check_finite=False)
    alpha = sla.cho_solve(c, ys, overwrite_b=False, check_finite=False)
    del c, K
    kq = kernel_matrix(h["kernel"], Uq, U, ls, h["outputscale_standardized"]).numpy()
    return (h["mean_constant_standardized"] + kq @ alpha) * h["y_std"] + h["y_mean"]


def bench_accuracy(a: argparse.Namespace, cur: Any, out: list[dict]) -> None:
    """Posterior mean of the engine against the exact GP and the truth on a 2-D grid."""
    hp = hyperparameters(2, a.seed)
    G = grid2d()
    f = truth(G / 10.0)
    for n in a.accuracy_sizes:
        X, y = make_data(n, 2, a.seed)
        log(f"accuracy N={n}: engine")
        e = engine(cur, 2, "integrated_variance", hp, X, y)
        m_new = e.posterior(G).mean[TARGET]
        del e
        log(f"accuracy N={n}: exact reference (dense Cholesky)")
        t0 = time.perf_counter()
        m_ex = exact_mean(hp, X, y, G)
        rmse = lambda u, v: float(np.sqrt(np.mean((u - v) ** 2)))  # noqa: E731
        row = {"n": n, "rmse_engine_vs_exact": rmse(m_new, m_ex),
               "rmse_engine_vs_truth": rmse(m_new, f), "rmse_exact_vs_truth": rmse(m_ex, f),
               "exact_seconds": time.perf_counter() - t0}
        row["truth_ratio"] = row["rmse_engine_vs_truth"] / row["rmse_exact_vs_truth"]
        row["rel_to_exact_error"] = row["rmse_engine_vs_exact"] / row["rmse_exact_vs_truth"]
        out.append(row)
        log(f"  -> {row}")


def accuracy_table(rows: list[dict]) -> str:
    """Markdown table of the accuracy rows."""
    out = ["| N | RMSE engine vs exact | RMSE exact vs truth | RMSE engine vs truth | "
           "engine/exact RMSE vs truth | (engine-exact) / (exact-truth) |",
           "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['n']:,} | {r['rmse_engine_vs_exact']:.2e} | "
                   f"{r['rmse_exact_vs_truth']:.2e} | {r['rmse_engine_vs_truth']:.2e} | "
                   f"{r['truth_ratio']:.4f} | {100 * r['rel_to_exact_error']:.2f}% |")
    return "\n".join(out)


def memory_child(n: int, seed: int, acq: str) -> None:
    """(Child process) load ``n`` 2-D points into a fresh engine, ask, print peak RSS."""
    import torch

    torch.set_num_threads(1)
    cur = load_current()
    hp = hyperparameters(2, seed)
    X, y = make_data(n + 20, 2, seed)
    e = engine(cur, 2, acq, hp, X[:n], y[:n])
    for i in range(n, n + 20):
        e.ingest(X[i:i + 1], y[i:i + 1, None])
    e.suggest(4)
    e.posterior(grid2d())
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            status[line.split(":")[0]] = int(line.split()[1]) * 1024
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child started by a big
    # parent would report the parent's peak
    print(json.dumps({"n": n, "rss_bytes": status["VmRSS"], "peak_rss_bytes": status["VmHWM"],
                      "model": e.model_info()}))


def bench_memory(a: argparse.Namespace, out: list[dict]) -> None:
    """Peak RSS of a fresh process per N (the interpreter, torch and the engine)."""
    for n in a.memory_sizes:
        log(f"memory N={n}")
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(n),
                              "--seed", str(a.seed), "--map-acquisition", a.map_acquisition],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        row = json.loads(res.stdout.strip().splitlines()[-1])
        out.append(row)
        log(f"  -> peak {row['peak_rss_bytes'] / 2**30:.2f} GiB")


def bench_refit(a: argparse.Namespace, base: Any, cur: Any, out: list[dict]) -> None:
    """One refit of each version per N, then suggest(1) latency while refits run."""
    hp = hyperparameters(2, a.seed)
    for n in a.refit_sizes:
        X, y = make_data(n, 2, a.seed)
        engines = {"new": engine(cur, 2, a.map_acquisition, hp, X, y)}
        if base is not None and n <= a.baseline_max_n:
            engines["base"] = engine(base, 2, a.map_acquisition, hp, X, y)
        row: dict[str, Any] = {"n": n}
        for k, e in engines.items():
            log(f"refit N={n} ({k})")
            t0 = time.perf_counter()
            e.refit()
            row[f"{k}_refit_s"] = time.perf_counter() - t0
            log(f"  -> {row[f'{k}_refit_s']:.1f} s")
        row.update(_asks_during_refits(engines["new"], a.refit_asks))
        out.append(row)
        log(f"  -> {row}")
        del engines


def _asks_during_refits(e: Any, asks: int) -> dict[str, Any]:
    """p50/p99 of suggest(1) alone, then while refits run back to back in a thread."""
    log("suggest(1) with no refit running")
    quiet = [_time(lambda: e.suggest(1)) for _ in range(asks)]
    stop = threading.Event()
    refits = [0]

    def loop() -> None:
        while not stop.is_set():
            e.refit()
            refits[0] += 1

    log("suggest(1) while refits run in a thread")
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    time.sleep(0.5)
    busy: list[float] = []
    while len(busy) < asks or refits[0] < 1:
        busy.append(_time(lambda: e.suggest(1)))
        if len(busy) > 50 * asks:
            break
    stop.set()
    th.join()
    row = {"quiet_p50": ms(quiet), "quiet_p99": ms(quiet, 99), "busy_p50": ms(busy),
           "busy_p99": ms(busy, 99), "asks_during_refit": len(busy),
           "refits_during": refits[0]}
    row["busy_p99_over_quiet_p50"] = row["busy_p99"] / row["quiet_p50"]
    return row


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- main --------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", default=BASELINE_REF,
                   help="git revision of the engine to compare with ('' for none)")
    p.add_argument("--baseline-max-n", type=int, default=5000,
                   help="the baseline engine is skipped above this N (exact O(N^3) build)")
    p.add_argument("--sizes", type=_ints, default=(1000, 5000, 20000), help="N in 2-D")
    p.add_argument("--sizes-4d", type=_ints, default=(5000,), help="N in 4-D (q=4 only)")
    p.add_argument("--qs", type=_ints, default=(1, 4), help="batch sizes in 2-D")
    p.add_argument("--acquisitions", default="variance,integrated_variance",
                   type=lambda s: tuple(v for v in s.split(",") if v))
    p.add_argument("--repeats", type=int, default=9, help="most runs per row and version")
    p.add_argument("--budget", type=float, default=40.0, help="seconds per row (>= 3 runs)")
    p.add_argument("--accuracy-sizes", type=_ints, default=(5000, 20000),
                   help="N of the accuracy check (2-D; the reference is a dense Cholesky)")
    p.add_argument("--memory-sizes", type=_ints, default=(20000,), help="N of the RSS check")
    p.add_argument("--refit-sizes", type=_ints, default=(5000, 20000),
                   help="N of the refit section (2-D)")
    p.add_argument("--refit-asks", type=int, default=30, help="asks timed per refit state")
    p.add_argument("--map-acquisition", default="misfit_variance",
                   help="acquisition of the memory and refit sections (the map default)")
    p.add_argument("--sections", default="suggest,accuracy,memory,refit",
                   type=lambda s: tuple(v for v in s.split(",") if v))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the sections, print the tables, write markdown and JSON."""
    a = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if a.memory_child:
        memory_child(a.memory_child, a.seed, a.map_acquisition)
        return 0
    started, t0 = datetime.now(UTC), time.perf_counter()
    load0 = os.getloadavg()[0]
    cur = load_current()
    base = load_baseline(a.baseline) if a.baseline else None
    res: dict[str, list[dict]] = {"suggest": [], "accuracy": [], "memory": [], "refit": []}
    if "suggest" in a.sections:
        bench_suggest(a, base, cur, res["suggest"])
    if "accuracy" in a.sections:
        bench_accuracy(a, cur, res["accuracy"])
    if "memory" in a.sections:
        bench_memory(a, res["memory"])
    if "refit" in a.sections:
        bench_refit(a, base, cur, res["refit"])
    md = [f"# Engine fast paths ({started:%Y-%m-%d %H:%M} UTC, "
          f"{(time.perf_counter() - t0) / 60:.1f} min, load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; baseline {a.baseline or 'none'})", "",
          f"`python benchmarks/engine_fastpaths.py {' '.join(sys.argv[1:])}`", ""]
    if res["suggest"]:
        md += ["## Suggest and ingest (p50 of interleaved runs)", "",
               suggest_table(res["suggest"]), ""]
    if res["accuracy"]:
        md += ["## Accuracy of the posterior mean (2-D, 50x50 grid)", "",
               accuracy_table(res["accuracy"]), ""]
    if res["memory"]:
        md += ["## Memory (fresh process, 2-D)", "", "| N | peak RSS GiB | RSS after GiB |",
               "|---:|---:|---:|"]
        md += [f"| {r['n']:,} | {r['peak_rss_bytes'] / 2**30:.2f} | "
               f"{r['rss_bytes'] / 2**30:.2f} |" for r in res["memory"]] + [""]
    if res["refit"]:
        md += ["## Refit", "", "| N | baseline refit s | new refit s | suggest(1) p50 quiet ms"
               " | p50 during refits ms | p99 during refits ms | p99 busy / p50 quiet | asks |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["refit"]:
            b = r.get("base_refit_s")
            md.append(f"| {r['n']:,} | {'-' if b is None else f'{b:.1f}'} | "
                      f"{r['new_refit_s']:.1f} | {fmt(r['quiet_p50'])} | {fmt(r['busy_p50'])} | "
                      f"{fmt(r['busy_p99'])} | {r['busy_p99_over_quiet_p50']:.2f} | "
                      f"{r['asks_during_refit']} |")
        md.append("")
    text = "\n".join(md)
    print(text)
    out = a.out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"started_at": started.isoformat(), "argv": sys.argv[1:], "results": res,
         "loadavg_start": load0, "loadavg_end": os.getloadavg()[0]}, indent=2, default=str))
    log(f"wrote {out}.md/.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
