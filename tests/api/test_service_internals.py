"""Two small parts of ``SteeringService`` tested on their own: ``_Live.told`` (the smoothed
time from an ask's reply to the next tell) and ``_store_and_release`` (commit, give the
lock back, then count the suggestions served from prepared picks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from server.service import SteeringService, _Live, _OnceLease
from server.settings import Settings
from server.steering.engine import GPEngine
from server.steering.errors import Conflict
from server.steering.spec import ExperimentSpec
from server.store.base import (
    ExperimentStatus,
    NewSuggestion,
    StoreUnavailable,
    SuggestionRecord,
)
from server.store.sql import SQLStore
from tests.store.factories import SPEC, suggestion

AHEAD = "beamsteer_suggestions_ahead_total"


def _live() -> _Live:
    spec = ExperimentSpec.from_dict(SPEC)
    return _Live(spec, GPEngine(spec), asyncio.Lock())


def test_told_sets_the_first_gap_then_averages() -> None:
    live = _live()
    live.asked_at = 100.0
    live.told(102.0)
    assert live.measuring_s == 2.0 and live.asked_at is None
    live.asked_at = 200.0
    live.told(206.0)
    assert live.measuring_s == 0.5 * 2.0 + 0.5 * 6.0
    assert live.asked_at is None


def test_told_ignores_a_tell_without_an_ask_or_older_than_it() -> None:
    live = _live()
    live.told(50.0)  # no ask yet
    assert live.measuring_s is None and live.asked_at is None
    live.asked_at = 100.0
    live.told(99.0)  # e.g. another process's tell, stored before this ask's reply
    assert live.measuring_s is None and live.asked_at == 100.0
    live.told(103.0)
    live.told(110.0)  # a second tell after the same ask
    assert live.measuring_s == 3.0 and live.asked_at is None


class _FlakyStore(SQLStore):
    """A real SQLite store whose database stops answering, while ``down``, when suggestions
    are added (nothing is stored)."""

    down = False

    def add_suggestions(self, experiment_id: str,
                        items: Sequence[NewSuggestion]) -> list[SuggestionRecord]:
        if self.down:
            raise StoreUnavailable("database down")
        return super().add_suggestions(experiment_id, items)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[SteeringService]:
    store = _FlakyStore(f"sqlite:///{tmp_path / 'b.db'}")
    svc = SteeringService(store, Settings(data_dir=tmp_path, log_json=False))
    try:
        yield svc
    finally:
        asyncio.run(svc.stop())
        store.close()


def _ahead(svc: SteeringService) -> float:
    value = svc.metrics.registry.get_sample_value(AHEAD)
    assert value is not None
    return value


@pytest.mark.parametrize("ahead", [True, False])
def test_stored_suggestions_count_as_ahead_only_if_ahead(
        service: SteeringService, ahead: bool) -> None:
    exp_id = service.store.create_experiment(SPEC).id
    lease = _OnceLease(service.store.lock_asks(exp_id, 1.0))
    new = [suggestion(1.0), suggestion(2.0), suggestion(3.0)]
    recs = service._store_and_release(lease, exp_id, new, ahead)
    assert [r.position["x"] for r in recs] == [1.0, 2.0, 3.0] and lease.released
    assert len(service.store.list_suggestions(exp_id)) == 3
    assert _ahead(service) == (3.0 if ahead else 0.0)


@pytest.mark.parametrize("failure", ["unavailable", "paused"])
def test_a_failed_commit_counts_nothing_and_keeps_the_lock(
        service: SteeringService, failure: str) -> None:
    store = service.store
    assert isinstance(store, _FlakyStore)
    exp_id = store.create_experiment(SPEC).id
    if failure == "paused":  # the real store refuses suggestions for a paused experiment
        store.set_status(exp_id, ExperimentStatus.paused)
    store.down = failure == "unavailable"
    lease = _OnceLease(store.lock_asks(exp_id, 1.0))
    with pytest.raises(StoreUnavailable if failure == "unavailable" else Conflict):
        service._store_and_release(lease, exp_id, [suggestion(1.0)], True)
    assert _ahead(service) == 0.0
    assert not lease.released  # the caller gives it back (broken after StoreUnavailable)
    assert store.list_suggestions(exp_id) == []
