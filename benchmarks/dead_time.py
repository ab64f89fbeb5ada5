"""The beamline's dead time: how long the motors and the detector stand idle between two
points while the steering decides (issue #5, "never make the beamline wait").

A real Bluesky ``RunEngine`` drives simulated motors that take ``--move-ms`` to move
(``ophyd.sim.SynAxis(delay=...)``) and a detector that counts for ``--count-ms``
(``SynSignal(exposure_time=...)``) over a smooth synthetic map, against ``beamsteer
serve`` on SQLite in its own process. Per scenario, in one run:

* ``beamsteer in turn``: :func:`clients.bluesky.autonomous_scan`: ask, move, read, tell,
  then ask again;
* ``beamsteer ask ahead``: the same plan with ``ask_ahead=True``: the next batch is asked
  for while the last position is measured, each tell is sent while the motors move on;
* ``beamsteer auto``: the plan's default, ``ask_ahead="auto"``: ahead while waiting in turn
  would idle the beamline for more than 5% of a batch's time, else in turn (the table
  says how many asks went ahead);
* ``gpcam in turn``: a plan that does what an adaptive plan with gpCAM does (bluesky-
  adaptive's agents call ``ask`` and ``tell`` in turn): ``GPOptimizer.ask`` (variance) ->
  move -> read -> ``GPOptimizer.tell``, in the plan's process, on the same starting data,
  hyperparameters trained once beforehand (untimed, never again: gpCAM's cheapest way);
* ``raster``: the same moves and reads over a fixed list of positions, no steering: the
  floor (the RunEngine's own cost per point).

The dead time of a point is the time from the end of a reading (the RunEngine's ``save``
of its event) to the start of the next move (its ``set``), from a ``msg_hook``. Run
``python benchmarks/dead_time.py --help``; results go to ``benchmarks/out/``.
"""

from __future__ import annotations

import os

# Before numpy/torch load, as in ask_latency.py: one BLAS thread, passive OpenMP waits.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Generator, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `server` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.ask_latency import (  # noqa: E402
    LOWER,
    NOISE_SD,
    TARGET,
    UPPER,
    _loaded_experiment,
    machine_info,
    make_data,
    spec_json,
    truth,
)

STRATEGIES = ("beamsteer in turn", "beamsteer ask ahead", "beamsteer auto", "gpcam in turn",
              "raster")
AHEAD = {"beamsteer in turn": False, "beamsteer ask ahead": True, "beamsteer auto": "auto"}
GPCAM_TRAIN_SUBSET = 500  # as ask_latency.py: gpCAM's training on N = 5,000 takes minutes


@dataclass(frozen=True)
class Scenario:
    """Where a scan starts: ``n0`` points measured in ``d`` dimensions, then ``points``
    more, ``batch`` per ask, with the ``map`` default acquisition."""

    name: str
    d: int
    n0: int
    points: int
    batch: int = 1
    acquisition: str = "misfit_variance"


SCENARIOS = (
    Scenario("2-D map, from the start", 2, 0, 40),
    Scenario("2-D map at N = 1,000", 2, 1000, 30),
    Scenario("4-D map at N = 5,000, batches of 4", 4, 5000, 32, batch=4),
)


@dataclass
class Result:
    scenario: str
    strategy: str
    points: int = 0
    dead_ms: list[float] = field(default_factory=list)  # per point after the first
    wall_s: float = 0.0  # first move to last reading
    skipped: str | None = None
    asks: int | None = None  # Beamsteer's plan: its asks, and how many of them went ahead
    asks_ahead: int | None = None

    def stats(self) -> dict[str, float] | None:
        if not self.dead_ms:
            return None
        a = np.array(self.dead_ms)
        return {"p50": float(np.median(a)), "p95": float(np.percentile(a, 95)),
                "mean": float(a.mean()), "max": float(a.max())}


@dataclass(frozen=True)
class Config:
    scenarios: tuple[Scenario, ...]
    strategies: tuple[str, ...]
    move_s: float
    count_s: float
    seed: int
    out: Path


# --- the beamline ---------------------------------------------------------------------------


def beamline(d: int, cfg: Config, seed: int) -> tuple[list[Any], Any]:
    """``d`` motors (``x1``...) that take ``move_s`` to move, and a detector that counts for
    ``count_s`` and reads the map where they are, plus noise."""
    from ophyd.sim import SynAxis, SynSignal

    motors = [SynAxis(name=f"x{i + 1}", delay=cfg.move_s) for i in range(d)]
    rng = np.random.default_rng(seed)

    def read() -> float:
        U = (np.array([[m.position for m in motors]]) - LOWER) / (UPPER - LOWER)
        return float(truth(U)[0] + NOISE_SD * rng.standard_normal())

    det = SynSignal(func=read, name="det", exposure_time=cfg.count_s)
    return motors, det


class DeadTimes:
    """A ``msg_hook``: from the end of each reading (``save``) to the next move (the first
    ``set`` after it); and the run's time from its first move to its last reading."""

    def __init__(self) -> None:
        self.saved: float | None = None
        self.first_set: float | None = None
        self.last_save: float | None = None
        self.dead: list[float] = []

    def __call__(self, msg: Any) -> None:
        now = time.perf_counter()
        if msg.command == "set":
            if self.first_set is None:
                self.first_set = now
            if self.saved is not None:
                self.dead.append(1e3 * (now - self.saved))
                self.saved = None
        elif msg.command == "save":
            self.saved = self.last_save = now

    def result(self, scenario: str, strategy: str, points: int) -> Result:
        wall = (self.last_save or 0.0) - (self.first_set or 0.0)
        return Result(scenario, strategy, points, self.dead, wall)


def run_plan(plan: Generator[Any, Any, Any], scenario: str, strategy: str,
             points: int) -> Result:
    from bluesky import RunEngine

    hook = DeadTimes()
    RE = RunEngine({})
    RE.msg_hook = hook
    RE(plan)
    return hook.result(scenario, strategy, points)


# --- the strategies -------------------------------------------------------------------------


class _AskLog(logging.Handler):
    """Counts the plan's asks, and those asked ahead, from its debug log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.asks = self.ahead = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("asking for"):
            self.asks += 1
            self.ahead += " ahead," in record.getMessage()


def run_beamsteer(url: str, sc: Scenario, cfg: Config, strategy: str) -> Result:
    import httpx

    from clients import Client
    from clients.bluesky import autonomous_scan

    with httpx.Client(base_url=url, timeout=900) as raw:
        if sc.n0:
            X, y = make_data(sc.n0, sc.d, cfg.seed)
            eid, _ = _loaded_experiment(raw, sc.acquisition, X, y, sc.n0)
        else:
            r = raw.post("/api/v1/experiments", json=spec_json(sc.d, sc.acquisition))
            r.raise_for_status()
            eid = r.json()["id"]
    motors, det = beamline(sc.d, cfg, cfg.seed)
    plan_log, asks = logging.getLogger("beamsteer.bluesky"), _AskLog()
    level = plan_log.level
    plan_log.setLevel(logging.DEBUG)
    plan_log.addHandler(asks)
    try:
        with Client(url, timeout=900) as client:
            plan = autonomous_scan([det], motors, client, eid, max_points=sc.points,
                                   batch=sc.batch, reduce=lambda r: {TARGET: r["det"]},
                                   ask_ahead=AHEAD[strategy])
            result = run_plan(plan, sc.name, strategy, sc.points)
    finally:
        plan_log.removeHandler(asks)
        plan_log.setLevel(level)
    result.asks, result.asks_ahead = asks.asks, asks.ahead
    with Client(url, timeout=900) as client:
        stored = client.get_experiment(eid).n_measurements
        # the next strategy starts on a quiet server: no refit of this one still running
        client.wait_for_fit(eid, timeout=900)
    if stored != sc.n0 + sc.points:
        raise RuntimeError(f"{strategy}: {stored} measurements stored, expected "
                           f"{sc.n0 + sc.points}")
    return result


def run_gpcam(sc: Scenario, cfg: Config) -> Result:
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp
    from gpcam import GPOptimizer

    if sc.batch != 1:
        return Result(sc.name, "gpcam in turn",
                      skipped="not run: batches (gpCAM's ask n=4 at this N takes minutes)")
    n0 = max(sc.n0, 2 * sc.d)  # gpCAM needs data to start from
    X, y = make_data(n0, sc.d, cfg.seed)
    bounds = np.array([[LOWER, UPPER]] * sc.d)
    var = NOISE_SD**2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "hyperparameters initialized to ones", bounds
        idx = np.random.default_rng(cfg.seed).choice(n0, min(n0, GPCAM_TRAIN_SUBSET),
                                                     replace=False)
        small = GPOptimizer(X[idx], y[idx], noise_variances=np.full(len(idx), var))
        small.train()
        gp = GPOptimizer(X, y, noise_variances=np.full(n0, var),
                         init_hyperparameters=small.hyperparameters)
    motors, det = beamline(sc.d, cfg, cfg.seed)

    def plan() -> Generator[Any, Any, None]:
        yield from bps.open_run(md={"plan_name": "gpcam_in_turn"})
        for _ in range(sc.points):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = np.asarray(gp.ask(bounds, n=1, acquisition_function="variance")["x"])
            args: list[Any] = []
            for m, v in zip(motors, x.reshape(-1), strict=True):
                args += [m, float(v)]
            yield from bps.mv(*args)
            reading = yield from bps.trigger_and_read([det, *motors])
            here = np.array([[reading[m.name]["value"] for m in motors]])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gp.tell(here, np.array([reading["det"]["value"]]),
                        noise_variances=np.array([var]))
        yield from bps.close_run()

    return run_plan(bpp.stage_wrapper(plan(), [det, *motors]), sc.name, "gpcam in turn",
                    sc.points)


def run_raster(sc: Scenario, cfg: Config) -> Result:
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    motors, det = beamline(sc.d, cfg, cfg.seed)
    positions = make_data(sc.points, sc.d, cfg.seed + 1)[0]

    def plan() -> Generator[Any, Any, None]:
        yield from bps.open_run(md={"plan_name": "raster"})
        for x in positions:
            args: list[Any] = []
            for m, v in zip(motors, x, strict=True):
                args += [m, float(v)]
            yield from bps.mv(*args)
            yield from bps.trigger_and_read([det, *motors])
        yield from bps.close_run()

    return run_plan(bpp.stage_wrapper(plan(), [det, *motors]), sc.name, "raster", sc.points)


# --- report -----------------------------------------------------------------------------------


def table(cfg: Config, results: list[Result]) -> str:
    per_point = cfg.move_s + cfg.count_s
    lines = ["| scenario | strategy | points | dead time p50 ms | p95 ms | mean ms | max ms "
             "| share of the beamline's time idle | time per point ms | asks ahead |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        st = r.stats()
        if st is None:
            lines.append(f"| {r.scenario} | {r.strategy} | - | {r.skipped or '-'} "
                         "| | | | | | |")
            continue
        idle = st["mean"] / (st["mean"] + 1e3 * per_point)
        lines.append(f"| {r.scenario} | {r.strategy} | {r.points} | {st['p50']:.1f} "
                     f"| {st['p95']:.1f} | {st['mean']:.1f} | {st['max']:.1f} "
                     f"| {100 * idle:.1f}% | {1e3 * r.wall_s / r.points:.0f} "
                     f"| {'-' if r.asks is None else f'{r.asks_ahead} of {r.asks}'} |")
    return "\n".join(lines)


def plot(cfg: Config, results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s.name for s in cfg.scenarios]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(cfg.strategies)
    for i, strategy in enumerate(cfg.strategies):
        vals = []
        for s in scen:
            r = next((r for r in results if r.scenario == s and r.strategy == strategy), None)
            st = r.stats() if r is not None else None
            vals.append(st["mean"] if st else np.nan)
        ax.bar(np.arange(len(scen)) + i * width, vals, width, label=strategy)
    ax.set_xticks(np.arange(len(scen)) + width * (len(cfg.strategies) - 1) / 2, scen,
                  fontsize=8)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("mean dead time per point, ms")
    ax.set_title(f"Beamline idle between points (move {cfg.move_s * 1e3:g} ms, "
                 f"count {cfg.count_s * 1e3:g} ms)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(cfg: Config, results: list[Result], started: datetime, seconds: float,
                 command: str, info: dict[str, Any]) -> list[Path]:
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    md, js, png = (cfg.out.with_suffix(s) for s in (".md", ".json", ".png"))
    md.write_text("\n".join([
        f"# Beamline dead time ({started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min)", "",
        f"`{command}`", "",
        f"{info['cpu'] or 'CPU'}, {info['cpu_count']} cores, load average at start "
        f"{info['loadavg_start'][0]:.2f}. Moves {cfg.move_s * 1e3:g} ms, counts "
        f"{cfg.count_s * 1e3:g} ms; `beamsteer serve` on SQLite in its own process.", "",
        table(cfg, results), ""]))
    js.write_text(json.dumps({
        "started_at": started.isoformat(), "seconds": seconds, "command": command,
        "machine": info,
        "config": {"scenarios": [asdict(s) for s in cfg.scenarios],
                   "strategies": cfg.strategies, "move_s": cfg.move_s,
                   "count_s": cfg.count_s, "seed": cfg.seed},
        "results": [{**asdict(r), "stats": r.stats()} for r in results]}, indent=2))
    plot(cfg, results, png)
    return [md, js, png]


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="python benchmarks/dead_time.py",
        description="How long a Bluesky scan's motors and detector stand idle between "
                    "points: Beamsteer's plan in turn, asking ahead and deciding itself "
                    "(auto), gpCAM in turn, and "
                    "a raster (no steering), in one run.",
        epilog="All three scenarios took about 5 minutes on a 2-core VM (most of it loading "
               "and fitting N = 5,000 in 4-D, three times).")
    p.add_argument("--scenarios", default=",".join(str(i) for i in range(len(SCENARIOS))),
                   help="comma-separated indices into: " + "; ".join(
                       f"{i}: {s.name}" for i, s in enumerate(SCENARIOS)))
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated, of: {', '.join(STRATEGIES)}")
    p.add_argument("--quick", action="store_true", help="the first scenario only")
    p.add_argument("--move-ms", type=float, default=100.0, help="each move (default 100)")
    p.add_argument("--count-ms", type=float, default=100.0, help="each count (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "dead_time",
                   help="output stem: .md, .json and .png")
    a = p.parse_args(argv)
    try:
        idx = [int(v) for v in a.scenarios.split(",") if v.strip()]
        scenarios = tuple(SCENARIOS[i] for i in idx)
    except (ValueError, IndexError):
        p.error(f"--scenarios: indices in 0..{len(SCENARIOS) - 1}")
    if a.quick:
        scenarios = SCENARIOS[:1]
    strategies = tuple(s.strip() for s in a.strategies.split(",") if s.strip())
    if not strategies or set(strategies) - set(STRATEGIES):
        p.error(f"--strategies: of {', '.join(STRATEGIES)}")
    if a.move_ms < 0 or a.count_ms < 0:
        p.error("--move-ms and --count-ms must be >= 0")
    out = a.out.with_suffix("") if a.out.suffix in (".md", ".json", ".png") else a.out
    return Config(scenarios, strategies, a.move_ms / 1e3, a.count_ms / 1e3, a.seed, out)


@contextmanager
def server() -> Iterator[str]:
    from server.live import ServeProcess

    with tempfile.TemporaryDirectory(prefix="beamsteer-dead-") as tmp, \
            ServeProcess(Path(tmp), torch_threads=1) as srv:
        yield srv.url


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    cfg = parse_args(argv)
    command = "python benchmarks/dead_time.py " + " ".join(sys.argv[1:] if argv is None
                                                           else argv)
    started, t0 = datetime.now(UTC), time.perf_counter()
    info = machine_info()
    results: list[Result] = []
    runs: list[tuple[Scenario, str]] = [(s, k) for s in cfg.scenarios for k in cfg.strategies]
    with server() as url, tqdm(total=len(runs), unit="run", file=sys.stderr) as bar:
        for sc, strategy in runs:
            bar.set_description(f"{sc.name[:28]}: {strategy}")
            run: dict[str, Callable[[Scenario], Result]] = {
                **{k: lambda s, k=k: run_beamsteer(url, s, cfg, k) for k in AHEAD},
                "gpcam in turn": lambda s: run_gpcam(s, cfg),
                "raster": lambda s: run_raster(s, cfg)}
            results.append(run[strategy](sc))
            bar.update()
    seconds = time.perf_counter() - t0
    print(table(cfg, results))
    paths = write_report(cfg, results, started, seconds, command, info)
    print(f"\nwrote {', '.join(str(p) for p in paths)} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
