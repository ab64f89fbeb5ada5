"""``beamsteer simulate``: a virtual beamline steered by a live server, scored against the
truth and against a grid and a random scan of the same size."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clients.cli._common import OK, USAGE, client_options, command
from clients.http import Client


def register(sub: Any) -> None:
    """Add ``simulate`` to the ``beamsteer`` command line."""
    p = sub.add_parser(
        "simulate", parents=[client_options()],
        help="run a simulated beamline against a server",
        description="Steer a virtual sample through the server (ask, move, measure, tell), "
                    "then measure the same number of points on a grid and at random, each "
                    "in its own experiment, and print the RMSE of each posterior mean "
                    "against the sample's ground truth, with the motor travel time.")
    p.add_argument("--server", dest="url", default=argparse.SUPPRESS,
                   help="the server (same as --url)")
    p.add_argument("--sample", default="gradient-film", help="virtual sample (gradient-film)")
    p.add_argument("--points", type=int, default=200, help="measurements per scan")
    p.add_argument("--batch", type=int, default=1, help="positions per ask")
    p.add_argument("--seed", type=int, default=0, help="steering, noise and random scan")
    p.add_argument("--exposure", type=float, default=1.0, help="counting seconds per point")
    p.add_argument("--images", action="store_true",
                   help="the detector returns synthetic SAXS images (models/synth), posted "
                        "for the server to reduce (tagger ring probability, q-range mean)")
    p.add_argument("--detector-size", type=int, default=64,
                   help="image edge in pixels with --images (default 64)")
    p.add_argument("--target-error", type=float, default=None, metavar="FRACTION",
                   help="stop the steered scan once the server's estimated map error is at "
                        "most this fraction of the measured range (e.g. 0.02), from 10 d "
                        "points on; --points is then the most it may take, and the grid and "
                        "random scans get as many as it took")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=command(simulate))


def simulate(args: argparse.Namespace, client: Client) -> int:
    try:
        from clients.simulate import SAMPLES, compare
    except ImportError as e:
        print(f"beamsteer simulate needs numpy: pip install 'beamsteer[sim]' ({e})",
              file=sys.stderr)
        return USAGE
    if args.sample not in SAMPLES:
        print(f"unknown sample {args.sample!r}; known: {', '.join(SAMPLES)}", file=sys.stderr)
        return USAGE
    if args.points < 4 or args.batch < 1:
        print("--points must be >= 4 and --batch >= 1", file=sys.stderr)
        return USAGE
    if args.target_error is not None and not 0 < args.target_error < 1:
        print("--target-error must be a fraction in (0, 1)", file=sys.stderr)
        return USAGE
    report = compare(client, SAMPLES[args.sample](), args.points, batch=args.batch,
                     seed=args.seed, exposure=args.exposure, images=args.images,
                     detector_size=args.detector_size, target_error=args.target_error,
                     progress=not args.no_progress and not args.json,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"sample": report.sample, "target": report.target, "results": [
            {**r.__dict__, "beam_s": r.beam_s} for r in report.results]}, indent=2))
        return OK
    print(f"{report.sample}: posterior mean vs ground truth on a 40 x 40 map "
          f"(steering on {report.target})")
    print(report.table())
    s, g, r = (report.by_method(m).rmse[report.target] for m in ("steered", "grid", "random"))
    print(f"RMSE {report.target}: steered/grid {s / g:.2f}, steered/random {s / r:.2f}")
    return OK
