"""Measurements: seq numbering, idempotency keys, suggestions answered, atomicity."""

from __future__ import annotations

import pytest

from server.steering.errors import Conflict, UnknownSuggestion
from server.store.base import ExperimentStatus, NewMeasurement, Store, SuggestionStatus
from tests.store.factories import measurement, suggestion


def test_seq_counts_per_experiment(store: Store, experiment_id: str) -> None:
    other = store.create_experiment({"name": "other"}).id
    first = store.add_measurements(experiment_id, [measurement(1), measurement(2)])
    store.add_measurements(other, [measurement(9)])
    second = store.add_measurements(experiment_id, [measurement(3)])
    assert [r.seq for r in first.records + second.records] == [1, 2, 3]
    assert first.created == [True, True] and second.created == [True]
    assert [r.seq for r in store.list_measurements(other)] == [1]

    stored = store.list_measurements(experiment_id)
    assert stored == first.records + second.records
    r = stored[0]
    assert (r.experiment_id, r.position, r.values) == (
        experiment_id, {"x": 1.0, "y": -0.1}, {"intensity": 0.5})
    assert (r.noise, r.suggestion_id, r.key, r.metadata) == ({}, None, None, {})
    assert [m.seq for m in store.list_measurements(experiment_id, after_seq=1, limit=1)] == [2]
    assert store.list_measurements(experiment_id, after_seq=3) == []
    e = store.get_experiment(experiment_id)
    assert e.n_measurements == 3 and e.updated_at >= e.created_at


def test_all_fields_round_trip(store: Store, experiment_id: str) -> None:
    item = NewMeasurement(position={"y": 0.1, "x": 1 / 3}, values={"intensity": 1e-300},
                          noise={"intensity": 0.01}, key="run-1",
                          metadata={"uid": "c0ffee", "tags": [1, "a", None]})
    (created,) = store.add_measurements(experiment_id, [item]).records
    (read,) = store.list_measurements(experiment_id)
    assert read == created
    assert list(read.position) == ["y", "x"] and read.position["x"] == 1 / 3
    assert read.values == {"intensity": 1e-300} and read.metadata["tags"] == [1, "a", None]


def test_repeated_batch_is_idempotent(store: Store, experiment_id: str) -> None:
    batch = [measurement(i, key=f"k{i}") for i in range(3)]
    first = store.add_measurements(experiment_id, batch)
    again = store.add_measurements(experiment_id, batch)
    assert again.records == first.records
    assert again.created == [False, False, False]
    mixed = store.add_measurements(experiment_id, [batch[1], measurement(7, key="k7")])
    assert mixed.created == [False, True]
    assert mixed.records[0] == first.records[1] and mixed.records[1].seq == 4
    assert store.get_experiment(experiment_id).n_measurements == 4


def test_key_repeated_inside_a_batch_stores_once(store: Store, experiment_id: str) -> None:
    a = measurement(1, key="a")
    result = store.add_measurements(experiment_id, [a, measurement(2), a, measurement(3)])
    assert result.created == [True, True, False, True]
    assert result.records[2] == result.records[0]
    assert [r.seq for r in result.records] == [1, 2, 1, 3]
    assert [m.seq for m in store.list_measurements(experiment_id)] == [1, 2, 3]


def test_key_reused_for_other_content_conflicts(store: Store, experiment_id: str) -> None:
    store.add_measurements(experiment_id, [measurement(1, key="a")])
    with pytest.raises(Conflict, match="by a stored measurement") as e:
        store.add_measurements(experiment_id, [measurement(5), measurement(2, key="a")])
    assert e.value.field == "measurements[1].key"
    with pytest.raises(Conflict, match=r"by measurements\[0\] of this batch"):
        store.add_measurements(experiment_id, [measurement(3, key="b"), measurement(4, key="b")])
    assert store.get_experiment(experiment_id).n_measurements == 1
    # Metadata is not part of the measurement: a retry may carry its own.
    retry = measurement(1, key="a", metadata={"attempt": 2})
    assert store.add_measurements(experiment_id, [retry]).created == [False]


def test_answer_marks_suggestion_measured(store: Store, experiment_id: str) -> None:
    s1, s2 = store.add_suggestions(experiment_id, [suggestion(1), suggestion(2)])
    store.close_suggestion(experiment_id, s2.id, SuggestionStatus.abandoned)
    result = store.add_measurements(experiment_id, [measurement(1, suggestion_id=s1.id),
                                                    measurement(2, suggestion_id=s2.id)])
    assert [r.suggestion_id for r in result.records] == [s1.id, s2.id]
    got = store.get_suggestion(experiment_id, s1.id)
    assert got.status is SuggestionStatus.measured and got.closed_at is not None
    # A late answer to an abandoned suggestion is stored; the suggestion stays abandoned.
    assert store.get_suggestion(experiment_id, s2.id).status is SuggestionStatus.abandoned
    assert store.get_experiment(experiment_id).n_pending == 0


def test_unknown_suggestion_stores_nothing(store: Store, experiment_id: str) -> None:
    other = store.create_experiment({"name": "other"}).id
    (foreign,) = store.add_suggestions(other, [suggestion(1)])
    (mine,) = store.add_suggestions(experiment_id, [suggestion(2)])
    for bad in ("no-such-id", foreign.id):
        batch = [measurement(1, key="k1", suggestion_id=mine.id),
                 measurement(2, suggestion_id=bad)]
        with pytest.raises(UnknownSuggestion) as info:
            store.add_measurements(experiment_id, batch)
        assert (info.value.experiment_id, info.value.suggestion_id) == (experiment_id, bad)
    assert store.list_measurements(experiment_id) == []
    assert store.get_suggestion(experiment_id, mine.id).status is SuggestionStatus.pending
    assert store.get_suggestion(other, foreign.id).status is SuggestionStatus.pending


def test_closed_experiment_refuses_measurements(store: Store, experiment_id: str) -> None:
    store.set_status(experiment_id, ExperimentStatus.paused)
    store.add_measurements(experiment_id, [measurement(1)])  # paused still takes data
    store.set_status(experiment_id, ExperimentStatus.closed)
    with pytest.raises(Conflict):
        store.add_measurements(experiment_id, [measurement(2)])
    assert store.get_experiment(experiment_id).n_measurements == 1
