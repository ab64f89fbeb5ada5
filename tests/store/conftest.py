"""One ``store`` fixture, parametrized over the backends (tiled ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.store.base import Store, open_store
from tests.store.factories import SPEC


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty SQLite file, or of the session's PostgreSQL database."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def experiment_id(store: Store) -> str:
    """A new experiment of its own (the PostgreSQL database is shared by the session)."""
    return store.create_experiment(SPEC).id
