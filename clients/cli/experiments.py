"""``beamsteer experiments create|list|show|pause|resume|close``."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from clients.cli._common import (
    OK,
    UsageError,
    client_options,
    command,
    fmt,
    load_mapping_file,
    print_json,
    table,
)
from clients.http import Client, Experiment


def register(sub: Any) -> None:
    """Add ``experiments`` and its actions to the ``beamsteer`` command line."""
    common = client_options()
    p = sub.add_parser("experiments", help="create, list, show, pause, resume, close",
                       description="Experiments on a Beamsteer server.")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = acts.add_parser("create", parents=[common], help="create an experiment from a spec",
                        description="Create an experiment from a spec file (JSON, or YAML "
                                    "with PyYAML): name, parameters, outputs, goal, ...")
    c.add_argument("--spec", required=True, metavar="FILE",
                   help="spec.yaml or spec.json ('-' reads JSON from stdin)")
    c.add_argument("--name", help="override the spec's name")
    c.add_argument("-q", "--quiet", action="store_true", help="print only the new id")
    c.set_defaults(func=command(create))
    ls = acts.add_parser("list", parents=[common], help="all experiments, newest first")
    ls.set_defaults(func=command(list_))
    sh = acts.add_parser("show", parents=[common], help="spec, counts and model of one")
    sh.add_argument("id", metavar="ID")
    sh.set_defaults(func=command(show))
    for action, status, what in (("pause", "paused", "no new suggestions"),
                                 ("resume", "active", "active again"),
                                 ("close", "closed", "read-only; pending suggestions "
                                                     "abandoned")):
        a = acts.add_parser(action, parents=[common], help=what)
        a.add_argument("id", metavar="ID")
        a.set_defaults(func=command(set_status), status=status)


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def create(args: argparse.Namespace, client: Client) -> int:
    spec = load_mapping_file(args.spec)
    if not isinstance(spec, dict):
        raise UsageError(f"{args.spec}: a spec is a mapping (name, parameters, outputs, ...)")
    if args.name:
        spec["name"] = args.name
    exp = client.create_experiment(spec)
    if args.json:
        print_json(exp)
    elif args.quiet:
        print(exp.id)
    else:
        print(f"created {exp.id} ({exp.name}): {', '.join(exp.parameter_names)} -> "
              f"{', '.join(exp.output_names)}, goal {exp.spec.get('goal')}")
    return OK


def list_(args: argparse.Namespace, client: Client) -> int:
    exps = client.list_experiments()
    if args.json:
        print_json(exps)
        return OK
    print(table([(e.id, e.name, e.status, e.n_measurements, e.n_pending, _when(e.created_at))
                 for e in exps], ["ID", "NAME", "STATUS", "MEASURED", "PENDING", "CREATED"]))
    return OK


def describe(exp: Experiment) -> str:
    """A human summary of one experiment."""
    s = exp.spec
    lines = [f"{exp.id}  {exp.name}  ({exp.status})",
             f"  goal {s.get('goal')}, acquisition {s.get('acquisition')}, kernel "
             f"{s.get('kernel')}, target {exp.target}, batch {s.get('batch_size')}",
             f"  {exp.n_measurements} measurements, {exp.n_pending} pending; created "
             f"{_when(exp.created_at)}"]
    rows = [(p["name"], p["lower"], p["upper"], p.get("units") or "", p.get("speed"))
            for p in s.get("parameters", [])]
    lines += ["  " + r for r in table(rows, ["PARAMETER", "LOWER", "UPPER", "UNITS",
                                             "SPEED"]).splitlines()]
    if exp.model is not None:
        out_rows = [(k, o.n, o.fitted_n, o.fit_failures, o.last_error or "")
                    for k, o in exp.model.outputs.items()]
        lines += ["  " + r for r in table(out_rows, ["OUTPUT", "POINTS", "FITTED ON",
                                                     "FIT FAILURES", "LAST ERROR"]
                                          ).splitlines()]
        if exp.model.refitting:
            lines.append("  (refitting now)")
        err = exp.map_error
        if err is not None:
            share = "" if err.relative is None else f", {err.relative:.2%} of the measured range"
            lines.append(f"  estimated map error of {exp.target}: {err.rms_std:.4g} rms"
                         f"{share} (on {err.n} points)")
    if s.get("forbidden"):
        lines.append(f"  forbidden: {fmt(s['forbidden'])}")
    return "\n".join(lines)


def show(args: argparse.Namespace, client: Client) -> int:
    exp = client.get_experiment(args.id)
    if args.json:
        print_json(exp)
    else:
        print(describe(exp))
    return OK


def set_status(args: argparse.Namespace, client: Client) -> int:
    exp = client.set_status(args.id, args.status)
    if args.json:
        print_json(exp)
    else:
        print(f"{exp.id}: {exp.status}")
    return OK
