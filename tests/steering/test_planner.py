"""Travel ordering: max-over-axes travel time, optimal open paths on small layouts."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from server.steering.planner import (
    cost_matrix,
    order_for_travel,
    path_cost,
    travel_time,
)


def test_travel_time_is_max_over_axes() -> None:
    assert travel_time([0, 0], [3, 4], [1.0, 2.0]) == pytest.approx(3.0)
    assert travel_time([0, 0], [3, 4], [1.0, 0.5]) == pytest.approx(8.0)
    assert travel_time([0, 0], [3, 4], [None, 2.0]) == pytest.approx(2.0)  # x is free
    assert travel_time([0, 0], [3, 4], [None, None]) == pytest.approx(5.0)  # Euclidean
    # no speeds at all: Euclidean in normalized units
    assert travel_time([0, 0], [3, 4], [None, None], bounds=[(0, 6), (0, 4)]) == pytest.approx(
        np.sqrt(0.5**2 + 1.0))


def test_collinear_points_are_visited_in_order() -> None:
    xs = np.array([7.0, 1.0, 4.0, 9.0, 2.0, 3.0, 8.0, 0.5, 6.0, 5.0, 11.0, 10.0, 12.0])
    X = np.c_[xs, np.zeros_like(xs)]
    for q in (5, len(xs)):  # exact and heuristic paths
        order = order_for_travel(X[:q], [1.0, 1.0], start=[0.0, 0.0])
        assert list(xs[:q][order]) == sorted(xs[:q])


def test_motor_speeds_change_the_order() -> None:
    # slow y: visit by rows; slow x: visit by columns
    X = np.array([[0, 1], [1, 0], [1, 1], [0, 0.0]])
    by_rows = order_for_travel(X, [10.0, 0.1], start=[0, 0])
    by_cols = order_for_travel(X, [0.1, 10.0], start=[0, 0])
    assert [tuple(X[i]) for i in by_rows] == [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert [tuple(X[i]) for i in by_cols] == [(0, 0), (0, 1), (1, 1), (1, 0)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("with_start", [True, False])
def test_small_cases_are_optimal(seed: int, with_start: bool) -> None:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, (7, 2))
    speeds = [1.0, 0.3]
    start = [0.0, 0.0] if with_start else None
    order = order_for_travel(X, speeds, start=start)
    pts = X if start is None else np.vstack([X, start])
    C = cost_matrix(pts, speeds)
    first = C[7, :7] if start is not None else None
    best = min(path_cost(list(p), C[:7, :7], first) for p in permutations(range(7)))
    assert sorted(order) == list(range(7))
    assert path_cost(order, C[:7, :7], first) == pytest.approx(best)


def test_large_batch_is_a_permutation_and_beats_the_given_order() -> None:
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (40, 3))
    order = order_for_travel(X, [None, None, None], start=[0, 0, 0])
    assert sorted(order) == list(range(40))
    C = cost_matrix(np.vstack([X, np.zeros(3)]), [None, None, None])
    assert path_cost(order, C[:40, :40], C[40, :40]) < path_cost(list(range(40)), C[:40, :40],
                                                                 C[40, :40])
