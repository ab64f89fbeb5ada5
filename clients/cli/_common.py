"""What the client subcommands share: ``--url``/``--json``, exit codes, tables.

Exit codes: 0 done, 1 the server refused (4xx), 2 usage error (bad option, unreadable
file), 3 no answer (cannot connect, or 5xx after retries).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from clients.http import BeamsteerError, Client, ConnectionFailed, ServerError
from clients.http._common import DEFAULT_URL

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    """A problem with the command line or its files (exit code 2)."""


def client_options() -> argparse.ArgumentParser:
    """Parent parser of every client subcommand: where the server is, how to print."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server")
    g.add_argument("--url", default=os.environ.get("BEAMSTEER_URL", DEFAULT_URL),
                   help="the Beamsteer server (env BEAMSTEER_URL; default %(default)s)")
    g.add_argument("--api-key", default=os.environ.get("BEAMSTEER_API_KEY"),
                   help="sent as a bearer token (env BEAMSTEER_API_KEY)")
    g.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for each reply (default %(default)s)")
    g.add_argument("--json", action="store_true",
                   help="print JSON (one object, or one line per event) instead of tables")
    return p


def command(fn: Callable[[argparse.Namespace, Client], int]) -> Callable[[argparse.Namespace],
                                                                         int]:
    """Run ``fn(args, client)`` and turn errors into messages and exit codes."""

    def run(args: argparse.Namespace) -> int:
        try:
            with Client(args.url, args.api_key, timeout=args.timeout) as client:
                return fn(args, client)
        except UsageError as e:
            print(f"beamsteer: error: {e}", file=sys.stderr)
            return USAGE
        except (ConnectionFailed, ServerError) as e:
            print(f"beamsteer: {args.url}: {e}", file=sys.stderr)
            return UNREACHABLE
        except BeamsteerError as e:
            where = f"{e.field}: " if e.field else ""
            why = "not sent" if e.status is None else f"HTTP {e.status}"
            print(f"beamsteer: refused ({why}): {where}{e.reason}", file=sys.stderr)
            for extra in e.errors[1:]:
                print(f"  also: {'.'.join(map(str, extra.get('loc', [])))}: "
                      f"{extra.get('msg', '')}", file=sys.stderr)
            return REFUSED
        except KeyboardInterrupt:
            return 130

    return run


def pairs(text: str, what: str) -> dict[str, float]:
    """``"x=1,y=2.5"`` -> ``{"x": 1.0, "y": 2.5}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"{what}: expected name=value[,name=value...], got {part!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"{what}: {name.strip()}={value!r} is not a number") from None
    if not out:
        raise UsageError(f"{what}: nothing given")
    return out


def load_mapping_file(path: str) -> Any:
    """JSON, or YAML for ``.yaml``/``.yml`` (needs PyYAML); ``-`` reads JSON from stdin."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UsageError("YAML files need PyYAML: pip install pyyaml, "
                             "or give the spec as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageError(f"{path}: not valid YAML: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON: {e}") from None


def print_json(obj: Any) -> None:
    """Pretty JSON on stdout (pydantic models are dumped first)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if hasattr(o, "model_dump") else o for o in obj]
    print(json.dumps(obj, indent=2))


def fmt(v: Any) -> str:
    """A cell: numbers short, mappings as ``k=v``, None as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return " ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [list(header)] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)
