"""A tell whose COMMIT broke mid-flight (stored, but the caller got a 503) and was then
sent again with its key: the store holds it once, and the GP must hold it too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.live import LiveServer
from server.service import SteeringService
from server.settings import Settings
from server.store.base import NewMeasurement, StoredMeasurements, StoreUnavailable, open_store
from tests.api.conftest import SPEC, make_settings


class CommitThenFail:
    """A store whose next ``add_measurements`` commits, then raises as if the connection
    broke before the reply (what a database crash during COMMIT does)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.fail_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def add_measurements(self, experiment_id: str,
                         items: Sequence[NewMeasurement]) -> StoredMeasurements:
        stored = self._store.add_measurements(experiment_id, items)
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("connection lost", during_commit=True)
        return stored


def test_broken_commit_is_502_and_the_retry_is_stored_once(tmp_path: Path) -> None:
    store = CommitThenFail(open_store(f"sqlite:///{tmp_path / 'b.db'}"))
    m = {"position": {"x": 1.0, "y": 2.0}, "values": {"intensity": 0.5}, "key": "k1"}
    try:
        with LiveServer(make_settings(store.url, tmp_path), store=store) as server, \
                httpx.Client(base_url=server.url, timeout=30) as c:
            url = f"/api/v1/experiments/{c.post('/api/v1/experiments', json=SPEC).json()['id']}"
            store.fail_next = True
            broken = c.post(f"{url}/measurements", json={"measurements": [m]})
            retried = c.post(f"{url}/measurements", json={"measurements": [m]})
            stored = c.get(f"{url}/measurements").json()["measurements"]
    finally:
        store.close()
    # Not 503 ("nothing was done"): the client must not repeat a non-idempotent request.
    assert broken.status_code == 502 and int(broken.headers["retry-after"]) >= 1
    (item,) = broken.json()["detail"]
    assert item["type"] == "store_unavailable"
    assert "may or may not have been stored" in item["msg"]
    assert retried.status_code == 201 and retried.json()["created"] == [False]
    assert [s["key"] for s in stored] == ["k1"]


async def test_retried_tell_after_a_broken_commit_reaches_the_gp(tmp_path: Path) -> None:
    store = CommitThenFail(open_store(f"sqlite:///{tmp_path / 'b.db'}"))
    service = SteeringService(store, Settings(data_dir=tmp_path, log_json=False))
    await service.start()
    try:
        exp = await service.create_experiment(SPEC)
        m = {"position": {"x": 1.0, "y": 2.0}, "values": {"intensity": 0.5}, "key": "k1"}
        store.fail_next = True
        with pytest.raises(StoreUnavailable) as info:
            await service.measure(exp.id, [m])
        assert info.value.during_commit
        again = await service.measure(exp.id, [m])  # the caller retries with the key
        assert again.created == [False]  # stored once, by the first call
        assert (await service.get_experiment(exp.id)).n_measurements == 1
        assert (await service.model_status(exp.id)).n == 1  # the retry reached the GP
    finally:
        await service.stop()
        store.close()
