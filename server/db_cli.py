"""``beamsteer db``: the store's schema migrations (imports Alembic only when run).

The service migrates on start, so an operator needs this only to migrate ahead of a
rolling restart, to check where a database stands, or to see what a release changes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def database_options() -> argparse.ArgumentParser:
    """``--database-url`` and ``--data-dir``, as a parent parser for commands that work on
    the store directly (``db``, ``keys``); :func:`store_url` reads them back."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--database-url", default=None,
                       help="SQLAlchemy URL (default: BEAMSTEER_DATABASE_URL, else the "
                            "SQLite file in the data dir)")
    where.add_argument("--data-dir", default=None,
                       help="directory of the embedded SQLite database (default: "
                            "BEAMSTEER_DATA_DIR, else ./data)")
    return where


def register(sub: Any) -> None:
    """Add ``db upgrade|current|history|revision`` to the ``beamsteer`` command line."""
    where = database_options()

    p = sub.add_parser("db", help="database schema migrations (upgrade, current, history)",
                       description="Schema migrations of the store (Alembic). The service "
                                   "runs `upgrade` itself on start.")
    actions = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = actions.add_parser("upgrade", parents=[where], help="migrate to the newest schema",
                            description="Migrate the database to REVISION (default head). "
                                        "Safe while the service runs: migrations take a "
                                        "lock, and a second upgrade waits and does nothing.")
    up.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    up.set_defaults(func=_upgrade)
    cur = actions.add_parser("current", parents=[where],
                             help="the revision the database is at")
    cur.set_defaults(func=_current)
    hist = actions.add_parser("history", help="the revisions this release knows")
    hist.set_defaults(func=_history)
    rev = actions.add_parser(
        "revision", help="(developers) write a new revision from changes to schema.py",
        description="Compare server/store/schema.py with a scratch database at head and "
                    "write the difference as a new revision into the package. Review it: "
                    "renames and data moves need a hand.")
    rev.add_argument("-m", "--message", required=True, help="what the revision changes")
    rev.set_defaults(func=_revision)


def store_url(args: argparse.Namespace) -> str:
    """The store URL named by :func:`database_options` (else the settings' default)."""
    from server.settings import Settings

    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides).store_url


def _engine(url: str) -> Any:
    from server.store.engine import make_engine, sqlalchemy_url

    return make_engine(sqlalchemy_url(url))


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _upgrade(args: argparse.Namespace) -> int:
    from server.store import migrate

    _log_steps()
    url = store_url(args)
    engine = _engine(url)
    try:
        now = migrate.upgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"{_shown(url)}: at {_describe(now, migrate.heads())}")
    return 0


def _log_steps() -> None:
    """Show each migration step ("Running upgrade 0001 -> 0002, ...") on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # see migrate.py


def _current(args: argparse.Namespace) -> int:
    from server.store import migrate
    from server.store.engine import is_memory, sqlalchemy_url

    url = store_url(args)
    u = sqlalchemy_url(url)
    if u.get_backend_name() == "sqlite" and not is_memory(u):
        from pathlib import Path

        if not Path(str(u.database)).expanduser().exists():
            print(f"{_shown(url)}: no database file yet", file=sys.stderr)
            return 1
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            now = migrate.current(conn)
    finally:
        engine.dispose()
    print(f"{_shown(url)}: at {_describe(now, migrate.heads())}")
    return 0 if now else 1


def _describe(now: tuple[str, ...], heads: tuple[str, ...]) -> str:
    if not now:
        return "no revision (empty, or not a Beamsteer database)"
    state = "head" if set(now) == set(heads) else f"behind head {', '.join(heads)}"
    return f"{', '.join(now)} ({state})"


def _history(args: argparse.Namespace) -> int:
    from alembic.script import ScriptDirectory

    from server.store import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config())
    for rev in script.walk_revisions():
        tag = " (head)" if rev.is_head else ""
        print(f"{rev.down_revision or 'base'} -> {rev.revision}{tag}: {rev.doc}")
    return 0


def _revision(args: argparse.Namespace) -> int:
    from alembic import command

    from server.store import migrate

    engine = _engine("sqlite:///:memory:")
    try:
        migrate.upgrade(engine)
        with migrate.migration_connection(engine) as conn:
            rev_id = f"{max(int(h) for h in migrate.heads()) + 1:04d}"
            command.revision(migrate.alembic_config(conn), args.message, autogenerate=True,
                             rev_id=rev_id)
    finally:
        engine.dispose()
    return 0
