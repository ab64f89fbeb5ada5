"""One ``store`` fixture, parametrized over the backends (tiled ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from server.store.base import Store, open_store
from tests.store.factories import SPEC


@pytest.fixture(scope="session")
def store_postgres_url(new_database: Callable[[], str]) -> str:
    """A PostgreSQL database of the store tests' own: ``expire_suggestions`` works across
    experiments, and the API tests' live server expires the session database's every
    0.2 s, which would take the store tests' suggestions before they do."""
    return new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty SQLite file, or of the store tests' PostgreSQL database."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "store_postgres_url"}[request.param]
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
