"""``beamsteer export`` and ``watch``: get the data out, follow along live."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clients.cli._common import OK, UsageError, client_options, command, fmt
from clients.http import Client, Event


def register(sub: Any) -> None:
    """Add ``export`` and ``watch`` to the ``beamsteer`` command line."""
    common = client_options()
    e = sub.add_parser("export", parents=[common], help="all measurements as CSV or JSON")
    e.add_argument("id", metavar="ID", help="experiment id")
    e.add_argument("--format", choices=["csv", "json"], default="csv",
                   help="csv (a column per parameter, output and noise) or json (records)")
    e.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    e.set_defaults(func=command(export))

    w = sub.add_parser("watch", parents=[common], help="follow an experiment's events live",
                       description="Print events as they happen: suggestions, measurements, "
                                   "refits, status changes. Reconnects if the connection "
                                   "drops. With --json, one JSON object per line.")
    w.add_argument("id", metavar="ID", help="experiment id")
    w.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N events (the first is always 'hello')")
    w.add_argument("--idle", type=float, default=None, metavar="SECONDS",
                   help="stop after this long without an event")
    w.set_defaults(func=command(watch))


def export(args: argparse.Namespace, client: Client) -> int:
    if args.format == "csv":
        text = client.measurements_csv(args.id)
    else:
        text = json.dumps([m.model_dump(mode="json", exclude={"created"})
                           for m in client.measurements(args.id)], indent=2) + "\n"
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as e:
            raise UsageError(f"cannot write {args.output}: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    return OK


def describe(ev: Event) -> list[str]:
    """Human lines for one event."""
    t = ev.when.strftime("%H:%M:%S")
    d = ev.data
    if ev.type == "hello":
        return [f"{t}  following {ev.experiment_id} ({d.get('status')}): "
                f"{d.get('n_measurements')} measured, {d.get('n_pending')} pending"]
    if ev.type == "suggestions":
        return [f"{t}  suggested   {s['id']}  {fmt(s['position'])}"
                for s in d.get("suggestions", [])]
    if ev.type == "measurements":
        return [f"{t}  measured    #{m['seq']}  {fmt(m['position'])}  ->  {fmt(m['values'])}"
                for m in d.get("measurements", [])]
    if ev.type == "suggestion_closed":
        return [f"{t}  {d.get('status'):<11} {d.get('id')}"]
    if ev.type == "refit":
        state = "failed" if d.get("failed") else "ok"
        return [f"{t}  refit       {state} on {d.get('n')} points in {fmt(d.get('seconds'))} s"]
    if ev.type == "status":
        return [f"{t}  status      {d.get('status')}"]
    return [f"{t}  {ev.type:<11} {json.dumps(d)}"]


def watch(args: argparse.Namespace, client: Client) -> int:
    seen = 0
    with client.events(args.id) as stream:
        while args.count is None or seen < args.count:
            try:
                ev = stream.next(timeout=args.idle)
            except TimeoutError:
                break
            if ev is None:
                break
            seen += 1
            if args.json:
                print(ev.model_dump_json(), flush=True)
            else:
                print("\n".join(describe(ev)), flush=True)
    return OK
