"""``beamsteer suggest``, ``measure`` and ``abandon``: ask and tell from a shell."""

from __future__ import annotations

import argparse
import csv
import json
from typing import Any

from clients.cli._common import (
    OK,
    UsageError,
    client_options,
    command,
    load_mapping_file,
    pairs,
    print_json,
    table,
)
from clients.http import Client, Experiment


def register(sub: Any) -> None:
    """Add ``suggest``, ``measure`` and ``abandon`` to the ``beamsteer`` command line."""
    common = client_options()
    s = sub.add_parser("suggest", parents=[common], help="ask where to measure next",
                       description="Ask for positions to measure, in the order to measure "
                                   "them; they stay pending until measured or abandoned.")
    s.add_argument("id", metavar="ID", help="experiment id")
    s.add_argument("-n", type=int, default=None, help="how many (default: the spec's batch)")
    s.set_defaults(func=command(suggest))

    m = sub.add_parser(
        "measure", parents=[common], help="tell what was measured",
        description="Store one measurement (--position/--value) or a batch (--file). Each "
                    "gets an idempotency key; give --key (or a key column) to make re-running "
                    "the same command safe.")
    m.add_argument("id", metavar="ID", help="experiment id")
    m.add_argument("--position", metavar="x=1,y=2", help="where, per parameter")
    m.add_argument("--value", metavar="intensity=3.1", help="what, per output")
    m.add_argument("--noise", metavar="intensity=0.01", help="variance per output, if known")
    m.add_argument("--suggestion", metavar="SID", help="the suggestion this measures")
    m.add_argument("--key", help="idempotency key (default: a new uuid4)")
    m.add_argument("--metadata", metavar="JSON", help="a JSON object stored with it")
    m.add_argument("--file", metavar="FILE",
                   help="a batch: .json (a list of {position, values, noise, suggestion_id, "
                        "key, metadata}) or .csv (a column per parameter and output, "
                        "optional <output>_noise, key, suggestion_id: what export writes)")
    m.set_defaults(func=command(measure))

    a = sub.add_parser("abandon", parents=[common], help="give up a pending suggestion")
    a.add_argument("id", metavar="ID", help="experiment id")
    a.add_argument("suggestion", metavar="SID", help="suggestion id")
    a.set_defaults(func=command(abandon))


def suggest(args: argparse.Namespace, client: Client) -> int:
    sugs = client.suggest(args.id, args.n)
    if args.json:
        print_json(sugs)
        return OK
    print(table([(s.id, s.position, s.mean, s.std, s.source) for s in sugs],
                ["SUGGESTION", "POSITION", "MEAN", "STD", "SOURCE"]))
    return OK


def _single(args: argparse.Namespace) -> dict[str, Any]:
    if not args.position or not args.value:
        raise UsageError("measure needs --position and --value, or --file")
    item: dict[str, Any] = {"position": pairs(args.position, "--position"),
                            "values": pairs(args.value, "--value")}
    if args.noise:
        item["noise"] = pairs(args.noise, "--noise")
    if args.suggestion:
        item["suggestion_id"] = args.suggestion
    if args.key:
        item["key"] = args.key
    if args.metadata:
        try:
            item["metadata"] = json.loads(args.metadata)
        except json.JSONDecodeError as e:
            raise UsageError(f"--metadata: not JSON: {e}") from None
    return item


def _num(cell: str, where: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise UsageError(f"{where}: {cell!r} is not a number") from None


def read_csv(path: str, exp: Experiment) -> list[dict[str, Any]]:
    """Measurements from a CSV with a column per parameter and output (``export``'s)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    missing = [p for p in exp.parameter_names if rows and p not in rows[0]]
    if missing:
        raise UsageError(f"{path}: no column for parameter(s) {', '.join(missing)}")
    items = []
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        item: dict[str, Any] = {
            "position": {p: _num(row[p], where) for p in exp.parameter_names},
            "values": {o: _num(row[o], where) for o in exp.output_names if row.get(o)}}
        noise = {o: _num(row[f"{o}_noise"], where) for o in exp.output_names
                 if row.get(f"{o}_noise")}
        if noise:
            item["noise"] = noise
        for col in ("key", "suggestion_id"):
            if row.get(col):
                item[col] = row[col]
        if row.get("metadata"):
            item["metadata"] = json.loads(row["metadata"])
        items.append(item)
    return items


def _batch(path: str, client: Client, experiment_id: str) -> list[dict[str, Any]]:
    if path.endswith(".csv"):
        items = read_csv(path, client.get_experiment(experiment_id))
    else:
        data = load_mapping_file(path)
        items = data.get("measurements") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UsageError(f"{path}: no measurements in it")
    return items


def measure(args: argparse.Namespace, client: Client) -> int:
    if args.file and (args.position or args.value):
        raise UsageError("give either --file or --position/--value")
    items = _batch(args.file, client, args.id) if args.file else [_single(args)]
    try:
        stored = client.measure(args.id, items)
    except TypeError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print_json(stored)
        return OK
    known = sum(1 for m in stored if not m.created)
    print(f"stored {len(stored) - known} measurement{'s' if len(stored) - known != 1 else ''}"
          + (f" ({known} already stored under the same key)" if known else "")
          + f"; last seq {max(m.seq for m in stored)}")
    return OK


def abandon(args: argparse.Namespace, client: Client) -> int:
    s = client.abandon(args.id, args.suggestion)
    if args.json:
        print_json(s)
    else:
        print(f"{s.id}: {s.status}")
    return OK
