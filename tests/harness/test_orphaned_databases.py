"""The test harness drops the PostgreSQL databases that killed test runs left behind, and
only those."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL, _admin_connect, drop_orphaned_databases


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make(admin, name: str, comment: str | None) -> None:
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if comment is not None:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(comment)))


def _names(admin) -> set[str]:
    return {r[0] for r in admin.execute("SELECT datname FROM pg_database").fetchall()}


def test_drops_only_dead_local_runs(postgres_url: str) -> None:
    admin_url = os.environ.get("BEAMSTEER_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)
    here = f"host={socket.gethostname()}"
    dead, alive = _dead_pid(), os.getpid()
    cases = {
        f"beamsteer_test_{dead}_a1": (here, True),  # killed run on this host: dropped
        f"beamsteer_test_{alive}_a2": (here, False),  # a live run (this one)
        f"beamsteer_test_{dead}_a3": ("host=elsewhere", False),  # another host's run
        f"beamsteer_test_{dead}_a4": (None, False),  # no comment: not ours to judge
        "beamsteer_test_0123456789ab": (here, False),  # an old-style name
    }
    with _admin_connect(admin_url) as admin:
        try:
            for name, (comment, _) in cases.items():
                _make(admin, name, comment)
            busy = f"beamsteer_test_{dead}_a5"  # dead creator, but someone is connected
            _make(admin, busy, here)
            url = make_url(admin_url).set(database=busy).render_as_string(hide_password=False)
            with _admin_connect(url):
                dropped = drop_orphaned_databases(admin)
            assert set(dropped) & (set(cases) | {busy}) == {
                n for n, (_, drop) in cases.items() if drop}
            left = _names(admin)
            assert busy in left
            for name, (_, drop) in cases.items():
                assert (name in left) is not drop, name
        finally:
            for name in [*cases, f"beamsteer_test_{dead}_a5"]:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                    sql.Identifier(name)))


def test_session_database_is_named_after_this_process(postgres_url: str) -> None:
    name = make_url(postgres_url).database
    assert name is not None and name.startswith(f"beamsteer_test_{os.getpid()}_")

