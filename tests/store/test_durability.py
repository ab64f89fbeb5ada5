"""What a store wrote is there for the next process; SQLite runs WAL + synchronous FULL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from server.store.base import open_store
from server.store.sql import SQLStore
from tests.store.factories import SPEC, measurement, suggestion

ROOT = Path(__file__).resolve().parents[2]

READ_BACK = """
import json, sys
from server.store.base import open_store
s = open_store(sys.argv[1])
e = s.get_experiment(sys.argv[2])
print(json.dumps({"n": e.n_measurements, "pending": e.n_pending, "spec": e.spec,
                  "seq": [m.seq for m in s.list_measurements(e.id)],
                  "keys": [m.key for m in s.list_measurements(e.id)]}))
s.close()
"""


def test_reopen_in_new_process(store_url: str) -> None:
    store = open_store(store_url)
    experiment_id = store.create_experiment(SPEC).id
    store.add_measurements(experiment_id, [measurement(i, key=f"k{i}") for i in range(3)])
    store.add_suggestions(experiment_id, [suggestion(1)])
    store.close()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", READ_BACK, store_url, experiment_id],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    assert json.loads(out.stdout) == {"n": 3, "pending": 1, "spec": SPEC, "seq": [1, 2, 3],
                                      "keys": ["k0", "k1", "k2"]}


def test_sqlite_pragmas(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    assert isinstance(store, SQLStore)
    store.create_experiment(SPEC)
    with store._engine.connect() as conn:  # the store's own connections
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                  for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    store.close()
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                      "busy_timeout": 30_000}
    path = sa.engine.make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as raw:  # WAL is a property of the file itself
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def test_urls(postgres_url: str) -> None:
    memory = open_store("sqlite:///:memory:")
    e = memory.create_experiment(SPEC)
    assert memory.get_experiment(e.id) == e
    memory.close()
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgresql+psycopg://")):
        store = open_store(url)
        assert store.url == url
        assert store.get_experiment(store.create_experiment(SPEC).id).spec == SPEC
        store.close()
