"""The closed loop against a live server, and the comparison with a grid and random scan.

:func:`run_steered` asks, moves, measures and tells until ``points`` measurements are in.
:func:`compare` does that, then measures the same number of points on a grid and at
random (each through its own experiment on the same server, so the same GP maps them),
and reports the RMSE of each posterior mean against the sample's ground truth.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.http import Client, Experiment
from clients.simulate.beamline import Beamline
from clients.simulate.images import ImageDetector
from clients.simulate.sample import Sample


@dataclass
class Result:
    """One scan: its experiment, points, map errors and beam time."""

    method: str
    experiment_id: str
    n: int
    rmse: dict[str, float]
    travel_s: float
    count_s: float
    wall_s: float = 0.0

    @property
    def beam_s(self) -> float:
        """Travel plus counting."""
        return self.travel_s + self.count_s


@dataclass
class Report:
    """Steered vs grid vs random on one sample."""

    sample: str
    target: str
    results: list[Result] = field(default_factory=list)

    def by_method(self, method: str) -> Result:
        return next(r for r in self.results if r.method == method)

    def table(self) -> str:
        outs = list(self.results[0].rmse)
        head = ["method", "points", *[f"RMSE {o}" for o in outs], "travel [s]", "beam [s]"]
        rows = [[r.method, str(r.n), *[f"{r.rmse[o]:.4g}" for o in outs],
                 f"{r.travel_s:.0f}", f"{r.beam_s:.0f}"] for r in self.results]
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                 for r in [head, *rows]]
        return "\n".join(lines)


def spec_for(sample: Sample, outputs: Sequence[str], target: str, *, name: str,
             batch: int = 1, seed: int = 0, goal: str = "map",
             reductions: dict[str, Any] | None = None) -> dict[str, Any]:
    """An experiment spec for a sample: its axes (with motor speeds) and the outputs."""
    extra = {"reductions": reductions} if reductions else {}
    return {**extra, "name": name, "goal": goal, "target": target, "batch_size": batch,
            "seed": seed,
            "parameters": [{"name": a.name, "lower": a.lower, "upper": a.upper,
                            "units": a.units, "speed": a.speed} for a in sample.axes],
            "outputs": [{"name": o} for o in outputs],
            "metadata": {"simulated": True, "sample": sample.name}}


def _progress(total: int, enabled: bool) -> Callable[[int], None]:
    """A tqdm bar when tqdm is installed (and asked for), else a line every 10%."""
    if not enabled:
        return lambda n: None
    try:
        from tqdm import tqdm
    except ImportError:
        step = max(1, total // 10)
        done = [0]

        def plain(n: int) -> None:
            before, done[0] = done[0], done[0] + n
            if done[0] // step > before // step or done[0] >= total:
                print(f"  {done[0]}/{total} measured", file=sys.stderr, flush=True)
        return plain
    bar = tqdm(total=total, unit="pt", desc="steered", file=sys.stderr, leave=False)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()
    return update


def run_steered(client: Client, beamline: Beamline, experiment: Experiment, points: int, *,
                batch: int = 1, progress: bool = False, target_error: float | None = None,
                min_points: int | None = None) -> int:
    """Ask ``batch`` positions, move and measure each in the order given, tell them in one
    request, until ``points`` are measured or, with ``target_error``, the server's estimated
    map error is that small (:meth:`Experiment.map_good_enough`, checked after each batch
    once the refit the batch may have started is done, as a slower detector would see it).
    Returns how many were measured."""
    done = 0
    tick = _progress(points, progress)
    least = experiment.map_error_min_points if min_points is None else min_points
    while done < points:
        # (not before `least` points: the rule would not trust the estimate, and fewer
        # than 3 points have no fit to wait for)
        if target_error is not None and done >= max(least, 3):
            now = client.wait_for_fit(experiment)
            if now.map_good_enough(target_error, least):
                break
        q = min(batch, points - done)
        sugs = client.suggest(experiment, q)
        read = beamline.collect([s.position for s in sugs])
        client.measure(experiment, [
            {**r, "position": s.position, "suggestion": s, "key": uuid.uuid4().hex,
             "metadata": {"motor_s": round(beamline.travel_s, 3)}}
            for s, r in zip(sugs, read, strict=True)])
        done += len(sugs)
        tick(len(sugs))
    return done


def grid_positions(sample: Sample, n: int) -> list[dict[str, float]]:
    """The largest regular grid with at most ``n`` points (as square as the axes' ranges
    allow), at cell centres, in snake order (the short way for motors)."""
    a, b = sample.axes[:2]
    aspect = (a.upper - a.lower) / (b.upper - b.lower)
    na = max(1, int(math.floor(math.sqrt(n * aspect))))
    nb = max(1, n // na)
    xs = a.lower + (np.arange(na) + 0.5) * (a.upper - a.lower) / na
    ys = b.lower + (np.arange(nb) + 0.5) * (b.upper - b.lower) / nb
    mid = {ax.name: (ax.lower + ax.upper) / 2 for ax in sample.axes[2:]}
    out = []
    for i, x in enumerate(xs):
        for y in ys if i % 2 == 0 else ys[::-1]:
            out.append({a.name: float(x), b.name: float(y), **mid})
    return out


def random_positions(sample: Sample, n: int, seed: int) -> list[dict[str, float]]:
    """``n`` uniform positions, in the order drawn."""
    rng = np.random.default_rng(seed)
    return [{ax.name: float(rng.uniform(ax.lower, ax.upper)) for ax in sample.axes}
            for _ in range(n)]


def map_rmse(client: Client, sample: Sample, experiment: Experiment, outputs: Sequence[str],
             grid: int = 40, truth_of: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
             ) -> dict[str, float]:
    """RMSE of the posterior mean against the truth on a ``grid x grid`` map."""
    names = [a.name for a in sample.axes]
    post = client.posterior(experiment, grid={n: grid for n in names[:2]})
    truth = (truth_of or sample.truth)(np.array(post.points))
    out = {}
    for o in outputs:
        mean = np.array([np.nan if v is None else v for v in post.mean(o)], dtype=float)
        out[o] = float(np.sqrt(np.nanmean((mean - truth[o]) ** 2)))
    return out


def _scan(client: Client, beamline: Beamline, spec: dict[str, Any],
          positions: list[dict[str, float]]) -> Experiment:
    exp = client.create_experiment(spec)
    read = beamline.collect(positions)
    items = [{**r, "position": p} for p, r in zip(positions, read, strict=True)]
    size = 500 if beamline.detector is None else 20  # images make big requests
    for chunk in _chunks(items, size):
        client.measure(exp, chunk)
    return exp


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def compare(client: Client, sample: Sample, points: int, *, batch: int = 1, seed: int = 0,
            exposure: float = 1.0, progress: bool = False, images: bool = False,
            detector_size: int = 64, target_error: float | None = None,
            log: Callable[[str], None] = lambda s: None) -> Report:
    """Steered, grid and random scans of ``points`` each; the RMSE of each map.

    Args:
        client: Of the live server.
        sample: The virtual sample.
        points: Measurements per scan (the grid takes the largest grid that fits). With
            ``target_error``, the most the steered scan may take; the grid and random
            scans then get as many as it took.
        batch: Positions per ask in the steered scan.
        seed: Of the steering, the random scan and the counting noise.
        exposure: Counting seconds per point.
        progress: Show a progress bar for the steered scan.
        images: Post synthetic SAXS images (``detector_size`` pixels square) and let the
            server reduce them (tagger ``ring`` probability, steered on; ring q-range mean)
            instead of posting scalars reduced here.
        detector_size: Image edge in pixels (with ``images``).
        target_error: Stop the steered scan once the server's estimated map error is at
            most this fraction of the measured range (from ``10 d`` points on).
        log: Where to say what is happening.
    """
    def beamline() -> Beamline:
        det = ImageDetector(size=detector_size) if images else None
        return Beamline(sample, exposure=exposure, seed=seed, detector=det)

    bl = beamline()
    outputs, reductions = bl.outputs, bl.reductions
    scored = [o for o in outputs if o in bl.truth(np.zeros((1, len(sample.axes))))]
    target = scored[0]
    report = Report(sample.name, target)
    tag = f"{sample.name}-{uuid.uuid4().hex[:6]}"

    t0 = time.monotonic()
    exp = client.create_experiment(spec_for(sample, outputs, target, name=f"{tag}-steered",
                                            batch=batch, seed=seed, reductions=reductions))
    log(f"steered: experiment {exp.id}, {points} points in batches of {batch}")
    n = run_steered(client, bl, exp, points, batch=batch, progress=progress,
                    target_error=target_error)
    if n < points:
        err = client.get_experiment(exp).map_error
        log(f"steered: stopped at {n} points, the estimated map error "
            f"{'?' if err is None or err.relative is None else f'{err.relative:.3g}'} of "
            f"the measured range <= {target_error:g}; the grid and random scans get {n} too")
        points = n
    # the server refits when the data grew by 25%: 0.75 n is the most an incremental
    # run can be sure of
    client.wait_for_fit(exp, min_fitted=int(0.75 * n))
    report.results.append(Result("steered", exp.id, n,
                                 map_rmse(client, sample, exp, scored, truth_of=bl.truth),
                                 bl.travel_s, bl.count_s, time.monotonic() - t0))

    for method, positions in (("grid", grid_positions(sample, points)),
                              ("random", random_positions(sample, points, seed))):
        t0 = time.monotonic()
        bl = beamline()
        e = _scan(client, bl, spec_for(sample, outputs, target, name=f"{tag}-{method}",
                                       seed=seed, reductions=reductions), positions)
        log(f"{method}: experiment {e.id}, {len(positions)} points")
        client.wait_for_fit(e, min_fitted=len(positions))
        report.results.append(Result(method, e.id, len(positions),
                                     map_rmse(client, sample, e, scored, truth_of=bl.truth),
                                     bl.travel_s,
                                     bl.count_s, time.monotonic() - t0))
    return report
