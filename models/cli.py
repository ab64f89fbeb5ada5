"""``beamsteer models ...``: train, evaluate and list the deep nets.

Wire it into the project CLI with ``models.cli.register(subparsers)``; standalone,
``python -m models ...`` does the same.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

NETS = ("superres", "tagger")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command group (train, eval, list) to a CLI's subparsers."""
    p = subparsers.add_parser("models", help="train, evaluate and list the deep nets")
    sub = p.add_subparsers(dest="models_command", required=True)

    t = sub.add_parser("train", help="train a net on synthetic data (CPU) and write a checkpoint")
    t.add_argument("name", choices=NETS)
    t.add_argument("--epochs", type=int, default=None, help="default: the shipped recipe")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=None, help="default: models/weights/NAME.pt")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    t.add_argument("--images", type=int, default=None, help="training images (default: recipe)")
    t.add_argument("--eval-images", type=int, default=None, help="held-out images for metrics")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="metric tables on held-out images and a PNG figure")
    e.add_argument("name", choices=NETS)
    e.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped weights")
    e.add_argument("--n", type=int, default=None, help="held-out images per set or factor")
    e.add_argument("--figure", type=Path, default=None, help="write the PNG figure here")
    e.add_argument("--no-baseline", action="store_true", help="tagger: skip the baseline")
    e.add_argument("--json", type=Path, default=None, help="also write the metrics as JSON")
    e.set_defaults(func=_eval)

    ls = sub.add_parser("list", help="shipped nets with their inputs, outputs and metrics")
    ls.add_argument("--json", action="store_true", help="full model info as JSON")
    ls.set_defaults(func=_list)


def _quiet_threads() -> None:
    # Spinning OpenMP barriers slow torch badly on the shared 2-core machines (DESIGN.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _train(args: argparse.Namespace) -> int:
    _quiet_threads()
    kw: dict = {"seed": args.seed, "out": args.out, "threads": args.threads}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.images is not None:
        kw["n_images"] = args.images
    if args.eval_images is not None:
        kw["eval_images"] = args.eval_images
    t0 = time.time()
    if args.name == "superres":
        from models.superres.eval import format_table
        from models.superres.train import train
    else:
        from models.tagger.eval import format_table
        from models.tagger.train import train
    ckpt = train(**kw)
    print(format_table(ckpt["metrics"]))
    print(f"trained in {ckpt['train']['seconds']:.0f} s, total {time.time() - t0:.0f} s; "
          f"checkpoint: {args.out or 'models/weights/' + args.name + '.pt'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    _quiet_threads()
    from models import registry

    model = registry.load(args.checkpoint or args.name)
    if model.info.name != args.name:
        print(f"{args.checkpoint} holds a {model.info.name!r} net, not {args.name!r}")
        return 2
    if args.name == "superres":
        from models.superres import eval as ev

        metrics = ev.evaluate(model.net, n=args.n or 100)
    else:
        from models.tagger import eval as ev

        base_seed = None if args.no_baseline else model.info.seed
        metrics = ev.evaluate(model.net, n=args.n or 300, baseline_seed=base_seed)
    print(ev.format_table(metrics))
    if args.figure:
        fig_kw = {"n": args.n or 300} if args.name == "tagger" else {}
        print(f"figure: {ev.figure(model.net, args.figure, **fig_kw)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=1, default=str))
    return 0


def _list(args: argparse.Namespace) -> int:
    from models import registry

    for name in registry.available():
        info = registry.load(name).info
        if args.json:
            print(json.dumps(asdict(info), indent=1, default=str))
            continue
        ins = ", ".join(f"{s.name} {s.shape} {s.dtype}" for s in info.inputs)
        outs = ", ".join(f"{s.name} {s.shape} {s.dtype}" for s in info.outputs)
        print(f"{name}: {info.task}; in: {ins}; out: {outs}; seed {info.seed}, "
              f"generator {info.generator_version}")
        if info.tags:
            print(f"  tags: {', '.join(info.tags)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m models train|eval|list ...``."""
    parser = argparse.ArgumentParser(prog="python -m")  # + "models" = the real command
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["models", *(argv if argv is not None else _argv())])
    return int(args.func(args))


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]
