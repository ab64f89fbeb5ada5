"""Fixtures of the fault tests: private PostgreSQL and Redis servers a test may kill.

Skipped with the reason when the binaries are missing, failed instead under
``BEAMSTEER_TEST_REQUIRE_SERVICES=1`` (CI), like the shared services of tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest

from tests.faults.services import PrivatePostgres, PrivateRedis, Unavailable


def _missing(reason: str) -> NoReturn:
    if os.environ.get("BEAMSTEER_TEST_REQUIRE_SERVICES"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL cluster of this test's own (stop and start it at will)."""
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
    """``make_private_redis(aof=False)`` -> a running redis-server of this test's own."""
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
