"""Shared fixtures: database URLs for the store's backends (after tiled's ``conftest.py``).

``sqlite_url`` is a fresh SQLite file per test. ``postgres_url`` is a fresh PostgreSQL
database per test session, created through the admin URL in
``BEAMSTEER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
and dropped at the end, so parallel runs never share tables; tests sharing it must create
their own experiments. Without a PostgreSQL server the tests that need it are skipped.
``private_postgres`` and ``make_private_redis`` are servers of one test's own, which it may
kill and restart (the shared ones above must never be stopped).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.faults.services import PrivatePostgres, PrivateRedis, Unavailable

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Test databases are named after the process that made them, so that a later run can drop
# those a killed run left behind: beamsteer_test_<pid>_<random>, with the host in a comment.
_DB_PREFIX = "beamsteer_test_"
_DB_NAME = re.compile(rf"{_DB_PREFIX}(\d+)_[0-9a-f]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def _create_database(admin) -> str:  # admin: an autocommit psycopg.Connection
    from psycopg import sql

    name = f"{_DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(f"host={socket.gethostname()}")))
    return name


def _drop_database(admin, name: str) -> None:
    from psycopg import sql

    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def drop_orphaned_databases(admin) -> list[str]:
    """Drop the test databases of runs that died on this host: made here (their comment),
    by a process that no longer exists, with nobody connected. Other hosts' and live
    runs' databases are never touched."""
    from psycopg import sql

    rows = admin.execute(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database'), "
        "(SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname) "
        "FROM pg_database d WHERE d.datname LIKE %s", (_DB_PREFIX + "%",)).fetchall()
    dropped = []
    for name, comment, connected in rows:
        m = _DB_NAME.fullmatch(name)
        if (m is None or comment != f"host={socket.gethostname()}" or connected
                or _alive(int(m.group(1)))):
            continue
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        dropped.append(name)
    return dropped


def _admin_connect(admin_url: str):  # -> psycopg.Connection
    import psycopg
    from sqlalchemy.engine import make_url

    # psycopg takes plain libpq URLs: drop a "+psycopg" driver suffix.
    conninfo = make_url(admin_url).set(drivername="postgresql")
    return psycopg.connect(conninfo.render_as_string(hide_password=False), autocommit=True,
                           connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, dropped after the session."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get("BEAMSTEER_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)
    try:
        admin = _admin_connect(admin_url)
    except psycopg.OperationalError as exc:
        shown = make_url(admin_url).render_as_string(hide_password=True)
        if os.environ.get("BEAMSTEER_TEST_REQUIRE_SERVICES"):  # CI: a missing server fails
            pytest.fail(f"PostgreSQL at {shown} does not answer: {exc}")
        pytest.skip(f"PostgreSQL at {shown} does not answer "
                    f"(set BEAMSTEER_TEST_POSTGRES_URL): {exc}".strip())
    with admin:
        drop_orphaned_databases(admin)
        name = _create_database(admin)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with _admin_connect(admin_url) as admin:
            _drop_database(admin, name)


@pytest.fixture(scope="session")
def new_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Makes further fresh PostgreSQL databases, for tests that must not share the
    session's (``postgres_url`` decides skip or fail); all dropped after the session."""
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get("BEAMSTEER_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)
    names: list[str] = []

    def make() -> str:
        with _admin_connect(admin_url) as admin:
            name = _create_database(admin)
        names.append(name)
        return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with _admin_connect(admin_url) as admin:
        for name in names:
            _drop_database(admin, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file that does not exist yet, in a directory that does not either."""
    return f"sqlite:///{tmp_path / 'data' / 'beamsteer.db'}"


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis (``BEAMSTEER_TEST_REDIS_URL``); skipped when none answers."""
    import redis

    url = os.environ.get("BEAMSTEER_TEST_REDIS_URL", REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        if os.environ.get("BEAMSTEER_TEST_REQUIRE_SERVICES"):
            pytest.fail(f"Redis at {url} does not answer: {exc}")
        pytest.skip(f"Redis at {url} does not answer (set BEAMSTEER_TEST_REDIS_URL)")
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    prefix = f"beamsteer-test-{secrets.token_hex(6)}"
    yield prefix
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(scope="session")
def tagger_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, randomly initialised tagger saved the registry's way (for queue mechanics:
    results must equal a direct call, whatever the weights)."""
    import dataclasses

    import torch

    from models.checkpoint import save_checkpoint
    from models.synth.tags import TAGS
    from models.tagger.net import TaggerConfig, TaggerNet

    torch.manual_seed(0)
    config = TaggerConfig(tags=TAGS, size=32, widths=(8, 16))
    net = TaggerNet(config).eval()
    path = tmp_path_factory.mktemp("weights") / "tagger.pt"
    return save_checkpoint(path, {"name": "tagger", "config": dataclasses.asdict(config),
                                  "state_dict": net.state_dict(), "seed": 0,
                                  "generator": {"version": "test", "config": {}}})


def _missing(reason: str) -> NoReturn:
    if os.environ.get("BEAMSTEER_TEST_REQUIRE_SERVICES"):  # CI: a missing binary fails
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL cluster of this test's own, to stop and start at will
    (``tests/faults/services.py``); skipped without the binaries."""
    try:
        pg = PrivatePostgres()
    except Unavailable as exc:
        _missing(str(exc))
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


@pytest.fixture
def make_private_redis() -> Iterator[Callable[..., PrivateRedis]]:
    """``make_private_redis(aof=False)`` -> a running redis-server of this test's own, to
    kill and start at will; skipped without the binary."""
    made: list[PrivateRedis] = []

    def make(*, aof: bool = False) -> PrivateRedis:
        try:
            r = PrivateRedis(aof=aof)
        except Unavailable as exc:
            _missing(str(exc))
        made.append(r)
        r.start()
        return r

    yield make
    for r in made:
        r.close()
