"""The map error history: one point per n, in n order, bounded by thinning on a log scale."""

from __future__ import annotations

import math

import pytest

from server.steering.errors import UnknownExperiment
from server.store.base import MapErrorPoint, Store, thinned


def _point(n: int, rms: float = 1.0, relative: float | None = 0.1) -> MapErrorPoint:
    return MapErrorPoint(n=n, rms_std=rms, relative=relative, at=1_700_000_000.0 + n)


def test_points_come_back_in_n_order_one_per_n(store: Store, experiment_id: str) -> None:
    assert store.list_map_errors(experiment_id) == []
    before = store.get_experiment(experiment_id)
    for n in (3, 9, 6):
        store.add_map_error(experiment_id, _point(n, rms=1 / n), keep=100)
    store.add_map_error(experiment_id, _point(9, rms=0.5, relative=None), keep=100)  # again
    assert store.list_map_errors(experiment_id) == [
        _point(3, 1 / 3), _point(6, 1 / 6), _point(9, 0.5, None)]
    assert store.get_experiment(experiment_id) == before  # updated_at stays


def test_past_keep_the_first_and_newest_stay(store: Store, experiment_id: str) -> None:
    for n in range(3, 40):
        store.add_map_error(experiment_id, _point(n), keep=6)
    ns = [p.n for p in store.list_map_errors(experiment_id)]
    assert len(ns) == 6 and ns[0] == 3 and ns[-1] == 39
    assert ns == sorted(ns)


def test_unknown_experiment_and_non_finite_values(store: Store, experiment_id: str) -> None:
    with pytest.raises(UnknownExperiment):
        store.add_map_error("nope", _point(3), keep=10)
    with pytest.raises(UnknownExperiment):
        store.list_map_errors("nope")
    for bad in (_point(4, rms=math.nan), _point(4, relative=math.inf)):
        with pytest.raises(ValueError):
            store.add_map_error(experiment_id, bad, keep=10)
    assert store.list_map_errors(experiment_id) == []


def test_thinning_spreads_points_on_a_log_scale() -> None:
    ns = list(range(1, 1001))
    kept = sorted(set(ns) - set(thinned(ns, 20)))
    assert len(kept) == 20 and kept[0] == 1 and kept[-1] == 1000
    gaps = [math.log(b / a) for a, b in zip(kept, kept[1:], strict=False)]
    assert max(gaps) < 3 * math.log(1000) / 19  # no stretch of the run left bare
    assert thinned([3, 6], 2) == [] and thinned([5], 2) == []
    with pytest.raises(ValueError):
        thinned(ns, 1)
