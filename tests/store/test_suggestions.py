"""Suggestions: add, list, close, expire."""

from __future__ import annotations

import time

import pytest

from server.steering.errors import Conflict, UnknownExperiment, UnknownSuggestion
from server.store.base import ExperimentStatus, Store, SuggestionStatus
from tests.store.factories import measurement, suggestion


def test_add_get_list(store: Store, experiment_id: str) -> None:
    records = store.add_suggestions(experiment_id, [suggestion(i) for i in range(3)])
    assert [r.rank for r in records] == [0, 1, 2]
    assert len({r.batch for r in records}) == 1 and len({r.id for r in records}) == 3
    assert all(r.status is SuggestionStatus.pending and r.closed_at is None for r in records)
    assert records[1].position == {"x": 1.0, "y": 0.0} and records[1].acquisition == 0.25
    assert store.get_suggestion(experiment_id, records[1].id) == records[1]
    later = store.add_suggestions(experiment_id, [suggestion(9)])
    assert later[0].batch != records[0].batch
    assert store.list_suggestions(experiment_id) == records + later
    assert store.list_suggestions(experiment_id, status=SuggestionStatus.measured) == []
    assert store.get_experiment(experiment_id).n_pending == 4
    assert store.add_suggestions(experiment_id, []) == []


def test_close(store: Store, experiment_id: str) -> None:
    a, b = store.add_suggestions(experiment_id, [suggestion(1), suggestion(2)])
    closed = store.close_suggestion(experiment_id, a.id, SuggestionStatus.abandoned)
    assert closed.status is SuggestionStatus.abandoned and closed.closed_at is not None
    # Closing again is a no-op, even with another status.
    assert store.close_suggestion(experiment_id, a.id, SuggestionStatus.expired) == closed
    assert store.list_suggestions(experiment_id, status=SuggestionStatus.pending) == [b]
    with pytest.raises(ValueError):
        store.close_suggestion(experiment_id, b.id, SuggestionStatus.measured)


def test_unknown_suggestion(store: Store, experiment_id: str) -> None:
    other = store.create_experiment({"name": "other"}).id
    (foreign,) = store.add_suggestions(other, [suggestion(1)])
    for sid in ("nope", foreign.id):
        with pytest.raises(UnknownSuggestion):
            store.get_suggestion(experiment_id, sid)
        with pytest.raises(UnknownSuggestion):
            store.close_suggestion(experiment_id, sid, SuggestionStatus.abandoned)


def test_expire(store: Store, experiment_id: str) -> None:
    other = store.create_experiment({"name": "other"}).id
    now = time.time()
    old, fresh, forever = store.add_suggestions(
        experiment_id, [suggestion(1, now - 1), suggestion(2, now + 3600), suggestion(3)])
    (elsewhere,) = store.add_suggestions(other, [suggestion(4, now - 5)])
    (answered,) = store.add_suggestions(experiment_id, [suggestion(5, now - 1)])
    store.close_suggestion(experiment_id, answered.id, SuggestionStatus.abandoned)

    expired = store.expire_suggestions(now)
    mine = {r.id: r for r in expired if r.experiment_id in (experiment_id, other)}
    assert set(mine) == {old.id, elsewhere.id}
    assert mine[old.id].status is SuggestionStatus.expired and mine[old.id].closed_at == now
    assert store.get_suggestion(experiment_id, old.id) == mine[old.id]
    assert store.get_suggestion(experiment_id, fresh.id).status is SuggestionStatus.pending
    assert store.get_suggestion(experiment_id, forever.id).status is SuggestionStatus.pending
    assert store.get_experiment(experiment_id).n_pending == 2
    assert not [r for r in store.expire_suggestions(now) if r.experiment_id == experiment_id]


def test_only_active_experiments_take_suggestions(store: Store, experiment_id: str) -> None:
    for status in (ExperimentStatus.paused, ExperimentStatus.closed):
        store.set_status(experiment_id, status)
        with pytest.raises(Conflict):
            store.add_suggestions(experiment_id, [suggestion(1)])
    assert store.list_suggestions(experiment_id) == []


def test_nan_is_refused_alike(store: Store, experiment_id: str) -> None:
    from dataclasses import replace

    bad = replace(suggestion(1), std={"intensity": float("nan")})
    with pytest.raises(ValueError, match="JSON"):
        store.add_suggestions(experiment_id, [suggestion(2), bad])
    assert store.list_suggestions(experiment_id) == []


def test_ask_context_reads_what_an_ask_needs_in_one_snapshot(store: Store,
                                                             experiment_id: str) -> None:
    """The experiment, pending suggestions not yet expired (oldest first) and the newest
    measurement; expired-but-unmarked, abandoned and measured suggestions are left out."""
    empty = store.ask_context(experiment_id, now=1000.0)
    assert empty.experiment.id == experiment_id and empty.pending == [] and empty.last is None

    a, b, c, d = store.add_suggestions(experiment_id, [
        suggestion(1, 2000.0), suggestion(2, 500.0), suggestion(3), suggestion(4, 2000.0)])
    store.close_suggestion(experiment_id, d.id, SuggestionStatus.abandoned)
    store.add_measurements(experiment_id, [measurement(5), measurement(6)])
    ctx = store.ask_context(experiment_id, now=1000.0)
    assert [s.id for s in ctx.pending] == [a.id, c.id]  # b is past its time, d abandoned
    assert ctx.last is not None and ctx.last.seq == 2 and ctx.last.position["x"] == 6.0
    assert ctx.experiment.n_measurements == 2
    with pytest.raises(UnknownExperiment):
        store.ask_context("nope", now=1000.0)
