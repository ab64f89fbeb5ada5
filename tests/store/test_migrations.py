"""Schema migrations: data survives upgrades, and the revisions match ``schema.py``.

Tests that drop or rebuild tables get an empty database of their own (a new SQLite file, or
a new PostgreSQL database): the session's PostgreSQL database is shared with other tests.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from server.store import migrate
from server.store.base import ExperimentRecord, Store, open_store
from server.store.engine import make_engine, sqlalchemy_url
from server.store.schema import metadata
from tests.store.factories import SPEC, measurement, suggestion

# The tables of the first release, which made them with create_all before migrations.
FIRST_RELEASE = ("experiments", "suggestions", "measurements")

# A revision after head that SQLite can only apply by copying `experiments` to a new table and
# dropping the old one (it cannot alter a column's type): with foreign keys on, that drop
# would cascade into every measurement and suggestion.
REBUILD = '''
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"


def upgrade():
    with op.batch_alter_table("experiments") as batch:
        batch.alter_column("name", type_=sa.String(300), existing_type=sa.String(200),
                           existing_nullable=False)
        batch.add_column(sa.Column("note", sa.String(200), nullable=False,
                                   server_default="none"))


def downgrade():
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("note")
        batch.alter_column("name", type_=sa.String(200), existing_type=sa.String(300),
                           existing_nullable=False)
'''


@pytest.fixture
def fresh_postgres_url(new_database: Callable[[], str]) -> str:
    """A PostgreSQL database of this test's own (dropped after the session)."""
    return new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty database that nothing else uses."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "fresh_postgres_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    e = make_engine(sqlalchemy_url(empty_url))
    yield e
    e.dispose()


def _fill(store: Store) -> tuple[ExperimentRecord, list[str]]:
    """An experiment with measurements (keys, a measured suggestion) and a pending one."""
    exp = store.create_experiment(SPEC)
    s1, s2 = store.add_suggestions(exp.id, [suggestion(1), suggestion(2)])
    store.add_measurements(exp.id, [measurement(i, key=f"k{i}") for i in range(3)]
                           + [measurement(1, suggestion_id=s1.id)])
    store.save_model_state(exp.id, {"intensity": {"lengthscale": [0.3, 0.4]}})
    return store.get_experiment(exp.id), [s1.id, s2.id]


def _assert_kept(store: Store, before: ExperimentRecord, suggestion_ids: list[str]) -> None:
    after = store.get_experiment(before.id)
    assert (after.spec, after.model_state) == (before.spec, before.model_state)
    assert (after.n_measurements, after.n_pending) == (4, 1)
    got = store.list_measurements(before.id)
    assert [m.seq for m in got] == [1, 2, 3, 4]
    assert [m.key for m in got] == ["k0", "k1", "k2", None]
    assert got[3].suggestion_id == suggestion_ids[0]
    assert [s.id for s in store.list_suggestions(before.id)] == suggestion_ids
    # Writes go on where they stopped: seq 5, and the old keys still count.
    stored = store.add_measurements(before.id, [measurement(0, key="k0"), measurement(5)])
    assert stored.created == [False, True] and stored.records[1].seq == 5


def _at(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as conn:
        return migrate.current(conn)


def test_opening_migrates_to_head_and_reopening_keeps_data(store_url: str) -> None:
    store = open_store(store_url)
    exp, sids = _fill(store)
    store.close()
    store = open_store(store_url)  # the upgrade on open is now a no-op
    try:
        _assert_kept(store, exp, sids)
    finally:
        store.close()
    engine = make_engine(sqlalchemy_url(store_url))
    try:
        assert _at(engine) == migrate.heads()
    finally:
        engine.dispose()


def test_migrations_match_schema_py(engine: Engine) -> None:
    """The guard that keeps revisions and ``schema.py`` in step: after a change to
    ``schema.py``, write a revision (``beamsteer db revision -m ...``), then review it."""
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, metadata) == []


def test_downgrade_to_base_and_upgrade_again(engine: Engine) -> None:
    assert migrate.upgrade(engine) == migrate.heads()
    assert migrate.downgrade(engine, "base") == ()
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    assert migrate.upgrade(engine) == migrate.heads()


def test_database_from_before_migrations_is_stamped_and_kept(empty_url: str) -> None:
    engine = make_engine(sqlalchemy_url(empty_url))
    try:
        with engine.begin() as conn:  # what the first release did on open
            metadata.create_all(conn, tables=[metadata.tables[t] for t in FIRST_RELEASE])
        store = open_store(empty_url)
        exp, sids = _fill(store)
        with engine.begin() as conn:  # back to what the first release left behind
            conn.exec_driver_sql("DROP TABLE alembic_version")
            for table in set(metadata.tables) - set(FIRST_RELEASE):
                conn.exec_driver_sql(f"DROP TABLE {table}")
        store.close()
        assert _at(engine) == ()

        store = open_store(empty_url)
        try:
            _assert_kept(store, exp, sids)
        finally:
            store.close()
        assert _at(engine) == migrate.heads()
    finally:
        engine.dispose()


def test_data_survives_an_upgrade_that_rebuilds_a_table(empty_url: str, engine: Engine,
                                                        tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPT_LOCATION, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_rebuild.py").write_text(
        REBUILD.replace("{head}", migrate.heads()[0]))

    migrate.upgrade(engine, migrate.INITIAL)  # a database of the first release, with data
    store = open_store(empty_url)
    exp, sids = _fill(store)
    store.close()

    assert migrate.upgrade(engine, script_location=scripts) == ("9999",)
    with engine.connect() as conn:
        notes = conn.execute(sa.text("SELECT note FROM experiments WHERE id = :id"),
                             {"id": exp.id}).scalars().all()
        assert notes == ["none"]
    assert migrate.downgrade(engine, migrate.INITIAL, script_location=scripts) == ("0001",)
    store = open_store(empty_url)
    try:
        _assert_kept(store, exp, sids)
    finally:
        store.close()


def test_processes_starting_together_migrate_once(empty_url: str) -> None:
    """Four stores open an empty database at the same moment: the migration lock makes
    one create the tables while the others wait, then find them at head."""
    barrier = threading.Barrier(4)
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            barrier.wait(10)
            stores.append(open_store(empty_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not any(t.is_alive() for t in threads), "an open hung"
        assert errors == []
        exp = stores[0].create_experiment(SPEC)
        assert all(s.get_experiment(exp.id).id == exp.id for s in stores)
    finally:
        for s in stores:
            s.close()
    engine = make_engine(sqlalchemy_url(empty_url))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                migrate.heads()]
    finally:
        engine.dispose()


def test_a_connection_to_a_new_sqlite_file_waits_to_switch_it_to_wal(tmp_path: Path) -> None:
    """Switching a file to WAL needs it to itself, and SQLite refuses at once (no busy wait)
    while another connection holds a lock: stores opening a new database together (one
    migrating inside BEGIN IMMEDIATE) failed with "database is locked" about one time in
    twenty. The connect hook now waits for the lock, as every other statement does."""
    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)  # another process, first in
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x)")
    engine = make_engine(sqlalchemy_url(f"sqlite:///{path}"))
    modes: list[str] = []

    def connect() -> None:
        with engine.connect() as conn:
            modes.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar_one())

    t = threading.Thread(target=connect)
    t.start()
    t.join(0.3)
    assert t.is_alive() and modes == []  # waiting for the holder, not failed
    holder.execute("COMMIT")
    holder.close()
    t.join(30)
    engine.dispose()
    assert modes == ["wal"]
