"""Alembic environment: runs on the connection that ``server.store.migrate`` hands over.

There is no ``alembic.ini`` and no URL here: the store (on open) and ``beamsteer db`` build
the configuration in code and pass an open connection, already inside the transaction that
holds the migration lock (``config.attributes["connection"]``).
"""

from __future__ import annotations

from alembic import context

from server.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through server.store.migrate or `beamsteer db`, "
                       "which pass an open connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite can add a column but not alter or drop one: autogenerate then writes
    # batch_alter_table (copy to a new table), which needs foreign keys off (migrate.py).
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
