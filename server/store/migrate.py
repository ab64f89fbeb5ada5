"""Schema migrations (Alembic), run by the store on open and by ``beamsteer db``.

The configuration is built in code (no ``alembic.ini``): the scripts live in the package,
next to this module, so an installed wheel carries them. Each migration runs in one
transaction on one connection:

- PostgreSQL: a transaction-scoped advisory lock is taken first, so that two processes
  starting at once (two API replicas, a ``beamsteer db upgrade`` next to a running API)
  migrate one after the other; the second finds the database at head and does nothing.
  PostgreSQL's DDL is transactional: a failed migration leaves the old schema intact.
- SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock up front, which serializes
  processes the same way. Foreign keys are switched off for the migration, because
  SQLite's way to alter a table (copy it to a new one, drop the old one) would otherwise
  cascade the drop of ``experiments`` into every measurement; they are checked before
  commit instead.

A database created before migrations existed (``metadata.create_all``, the first release)
has the tables but no ``alembic_version``: it is stamped at :data:`INITIAL`, whose schema is
exactly that one, and upgraded from there.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

# Alembic narrates at INFO as its modules load ("setup plugin ..."): quiet before importing.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402

from server.store.engine import IMMEDIATE  # noqa: E402
from server.store.watchdog import patience  # noqa: E402

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
# The revision whose schema equals the tables that create_all made before migrations.
INITIAL = "0001"
# Key of the PostgreSQL advisory lock that serializes migrations across processes ("beam").
MIGRATION_LOCK = 0x6265616D


def _steps_only(record: logging.LogRecord) -> bool:
    """Keep "Running upgrade 0001 -> 0002, ..." lines; drop Alembic's other narration."""
    return record.getMessage().startswith("Running ")


# Alembic narrates every run at INFO ("Context impl ..."); a service log at INFO should
# show the migration steps that ran and nothing else.
logging.getLogger("alembic.runtime.migration").addFilter(_steps_only)


def alembic_config(connection: Connection | None = None, *,
                   script_location: Path = SCRIPT_LOCATION,
                   stdout: TextIO = sys.stdout) -> Config:
    """An Alembic configuration for our scripts; ``connection`` is what env.py runs on."""
    cfg = Config(stdout=stdout)
    # ConfigParser interpolation: a literal % in the path must be doubled.
    cfg.set_main_option("script_location", str(script_location).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def heads(script_location: Path = SCRIPT_LOCATION) -> tuple[str, ...]:
    """The head revision(s) of the scripts (one, unless someone forgot to merge)."""
    return tuple(ScriptDirectory.from_config(
        alembic_config(script_location=script_location)).get_heads())


def current(conn: Connection) -> tuple[str, ...]:
    """The revision(s) the database is at; ``()`` for a database without migrations."""
    return tuple(MigrationContext.configure(conn).get_current_heads())


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction, holding the migration lock (module docstring).

    No store timeout applies inside: the lock waits for another process's migration, and
    DDL on a large table may take minutes."""
    with engine.connect() as conn, patience(None):
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Only outside a transaction does this PRAGMA take effect: go to the driver.
            _raw_execute(conn, "PRAGMA foreign_keys=OFF")
        try:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                if not sqlite:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                yield conn
                if sqlite:
                    bad = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if bad:
                        raise RuntimeError(f"migration broke foreign keys: {bad[:5]}")
        finally:
            if sqlite:
                _raw_execute(conn, "PRAGMA foreign_keys=ON")


def _raw_execute(conn: Connection, statement: str) -> None:
    dbapi: Any = conn.connection.driver_connection
    dbapi.execute(statement)


def upgrade(engine: Engine, revision: str = "head", *,
            script_location: Path = SCRIPT_LOCATION) -> tuple[str, ...]:
    """Bring the database to ``revision`` (creating the tables on an empty one).

    Returns:
        The revision(s) the database is at afterwards.
    """
    with migration_connection(engine) as conn:
        cfg = alembic_config(conn, script_location=script_location)
        inspector = sa.inspect(conn)
        if not inspector.has_table("alembic_version") and inspector.has_table("experiments"):
            command.stamp(cfg, INITIAL)  # made by create_all before migrations existed
        command.upgrade(cfg, revision)
        return current(conn)


def downgrade(engine: Engine, revision: str, *,
              script_location: Path = SCRIPT_LOCATION) -> tuple[str, ...]:
    """Take the database back to ``revision`` (``"base"`` drops every table: data too)."""
    with migration_connection(engine) as conn:
        command.downgrade(alembic_config(conn, script_location=script_location), revision)
        return current(conn)
