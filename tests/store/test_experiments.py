"""Experiments: create, read, list, status, model state."""

from __future__ import annotations

import pytest

from server.steering.errors import UnknownExperiment
from server.store.base import ExperimentStatus, Store
from tests.store.factories import SPEC, measurement, suggestion


def test_create_and_get(store: Store) -> None:
    created = store.create_experiment(SPEC)
    assert created.status is ExperimentStatus.active
    assert created.spec == SPEC
    assert created.model_state == {}
    assert (created.n_measurements, created.n_pending) == (0, 0)
    assert created.created_at == created.updated_at > 0
    assert len(created.id) >= 8 and created.id.replace("-", "").replace("_", "").isalnum()
    assert store.get_experiment(created.id) == created


def test_spec_key_order_survives(store: Store) -> None:
    spec = {"name": "order", "z": 1, "a": {"y": 1, "b": 2}}
    assert list(store.get_experiment(store.create_experiment(spec).id).spec) == ["name", "z", "a"]


def test_list_newest_first_with_counts(store: Store) -> None:
    first = store.create_experiment(SPEC).id
    second = store.create_experiment(SPEC).id
    store.add_measurements(second, [measurement(1), measurement(2)])
    store.add_suggestions(second, [suggestion(3)])
    listed = [e.id for e in store.list_experiments()]
    assert listed.index(second) < listed.index(first)
    by_id = {e.id: e for e in store.list_experiments()}
    assert (by_id[first].n_measurements, by_id[first].n_pending) == (0, 0)
    assert (by_id[second].n_measurements, by_id[second].n_pending) == (2, 1)
    assert by_id[second] == store.get_experiment(second)


def test_set_status_and_model_state(store: Store, experiment_id: str) -> None:
    before = store.get_experiment(experiment_id)
    paused = store.set_status(experiment_id, ExperimentStatus.paused)
    assert paused.status is ExperimentStatus.paused
    assert paused.updated_at >= before.updated_at
    state = {"intensity": {"lengthscale": [0.3, 0.7], "noise": 1e-4}}
    store.save_model_state(experiment_id, state)
    assert store.get_experiment(experiment_id).model_state == state
    assert store.get_experiment(experiment_id).status is ExperimentStatus.paused


def test_unknown_experiment(store: Store) -> None:
    for call in (
        lambda: store.get_experiment("nope"),
        lambda: store.set_status("nope", ExperimentStatus.closed),
        lambda: store.save_model_state("nope", {}),
        lambda: store.add_measurements("nope", [measurement(1)]),
        lambda: store.list_measurements("nope"),
        lambda: store.add_suggestions("nope", [suggestion(1)]),
        lambda: store.list_suggestions("nope"),
        lambda: store.get_suggestion("nope", "x"),
    ):
        with pytest.raises(UnknownExperiment) as info:
            call()
        assert info.value.experiment_id == "nope"
