"""``beamsteer keys``: create, list and revoke API keys, directly in the store's database.

Like ``beamsteer db``, it needs no running service: a server picks up a new or revoked key
within ``auth_cache_s`` seconds (2 by default).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

# Kept in step with server.security.scopes.Scope (a test checks); not imported here so
# that `beamsteer --help` stays light.
from server.db_cli import database_options, store_url

SCOPES = ("read", "write:suggestions", "write:measurements", "admin")


def register(sub: Any) -> None:
    """Add ``keys create|list|revoke`` to the ``beamsteer`` command line."""
    where = database_options()
    where.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("keys", help="API keys: create, list, revoke",
                       description="API keys with scopes. Once one key exists, every API "
                                   "request needs a key (Authorization: Bearer ...).")
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", parents=[where], help="create a key and print it (shown only once)",
        description="Create a key. The key goes to stdout alone (KEY=$(beamsteer keys "
                    "create ...)), what it may do to stderr. Scopes: read (view "
                    "everything), write:suggestions (ask, abandon), write:measurements "
                    "(tell), admin (create/pause/close experiments; implies all). A "
                    "beamline needs read, write:suggestions and write:measurements.")
    create.add_argument("--name", required=True, help="who or what holds it")
    create.add_argument("--scope", action="append", required=True, choices=SCOPES,
                        dest="scopes", help="a scope; repeat for more")
    create.add_argument("--expires", default=None,
                        help="30d, 12h, 2w, a date (valid through that day, UTC) or an ISO "
                             "time (default: never)")
    create.add_argument("--experiment", action="append", default=None, dest="experiments",
                        metavar="ID", help="restrict the key to this experiment; repeat "
                                           "for more (default: all)")
    create.set_defaults(func=_create)
    ls = actions.add_parser("list", parents=[where], help="list keys (never the secrets)")
    ls.set_defaults(func=_list)
    revoke = actions.add_parser("revoke", parents=[where], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(func=_revoke)


def _open(args: argparse.Namespace) -> Any:
    from server.store.base import open_store

    return open_store(store_url(args))


def _when(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public(key: Any, now: float) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "scopes": [s.value for s in key.scopes],
            "experiments": None if key.experiments is None else list(key.experiments),
            "prefix": key.prefix, "state": key.state(now), "created_at": _when(key.created_at),
            "expires_at": _when(key.expires_at), "revoked_at": _when(key.revoked_at),
            "last_used_at": _when(key.last_used_at)}


def _create(args: argparse.Namespace) -> int:
    from server.security.keys import issue_key, parse_expiry
    from server.security.scopes import parse_scopes
    from server.steering.errors import UnknownExperiment

    try:
        expires = None if args.expires is None else parse_expiry(args.expires, time.time())
    except ValueError as exc:
        print(f"beamsteer keys create: {exc}", file=sys.stderr)
        return 2
    store = _open(args)
    try:
        for eid in args.experiments or ():
            try:
                store.get_experiment(eid)
            except UnknownExperiment:
                print(f"beamsteer keys create: no experiment {eid!r} in this database",
                      file=sys.stderr)
                return 1
        try:
            key, secret = issue_key(store.keys, args.name, sorted(parse_scopes(args.scopes)),
                                    expires_at=expires, experiments=args.experiments)
        except ValueError as exc:
            print(f"beamsteer keys create: {exc}", file=sys.stderr)
            return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps({**_public(key, time.time()), "key": secret}))
    else:
        print(secret)
        print(f"key {key.id} ({key.name}): {', '.join(s.value for s in key.scopes)}; "
              f"experiments: {', '.join(key.experiments) if key.experiments else 'all'}; "
              f"expires: {_when(key.expires_at) or 'never'}. Store it now: it is not shown "
              "again.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        keys = store.keys.list_keys()
    finally:
        store.close()
    now = time.time()
    rows = [_public(k, now) for k in keys]
    if args.json:
        print(json.dumps(rows))
        return 0
    cols = ("id", "name", "state", "scopes", "experiments", "prefix", "expires_at",
            "last_used_at")
    table = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in table)]) for i, c in enumerate(cols)]
    for row in [list(cols), *table]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return ",".join(v) if isinstance(v, list) else str(v)


def _revoke(args: argparse.Namespace) -> int:
    from server.security.keys import UnknownKey

    store = _open(args)
    try:
        key = store.keys.revoke_key(args.key_id)
    except UnknownKey as exc:
        print(f"beamsteer keys revoke: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps(_public(key, time.time())))
    else:
        print(f"revoked key {key.id} ({key.name}) at {_when(key.revoked_at)}; servers "
              "refuse it within a few seconds")
    return 0
