"""The sample-efficiency benchmark's maps and grids are fixed (benchmarks/autonomy.py)."""

import math

import numpy as np
import pytest

from benchmarks.autonomy import grid_counts, grid_points, n_to_reach
from benchmarks.maps import MAPS, validation_maps


@pytest.mark.parametrize("name", sorted(MAPS))
def test_maps_are_deterministic_and_finite(name: str) -> None:
    m = MAPS[name]
    T = m.test_points()
    assert T.shape == (4096, m.dim)
    assert np.array_equal(T, m.test_points())
    t = m.truth(T)
    assert np.isfinite(t).all() and m.value_range() > 0
    assert ((T >= m.lower) & (T <= m.upper)).all()


def test_validation_maps_are_seeded_and_held_out() -> None:
    """The tuning maps are deterministic, differ from each other and from the benchmark's."""
    a, b = validation_maps(), validation_maps()
    assert sorted(a) == [f"val-{d}d-{s}" for d in (2, 3, 4) for s in range(4)]
    assert not set(a) & set(MAPS)
    values = []
    for name, m in a.items():
        T = m.test_points()
        t = m.truth(T)
        assert np.array_equal(t, b[name].truth(T)) and np.isfinite(t).all()
        assert m.value_range() > 0.1  # a boundary or a spot, not a flat plate
        values.append(t[:64])
    assert len({v.round(6).tobytes() for v in values}) == len(values)


@pytest.mark.parametrize(("n", "d", "counts"), [
    (25, 2, (5, 5)), (30, 2, (6, 5)), (400, 4, (5, 5, 4, 4)), (10, 4, (2, 2, 2, 1)),
    (100, 3, (5, 5, 4))])
def test_grid_is_the_largest_balanced_grid(n: int, d: int, counts: tuple[int, ...]) -> None:
    assert grid_counts(n, d) == counts
    assert math.prod(counts) <= n


def test_grid_points_are_cell_centres() -> None:
    X = grid_points(MAPS["film-2d"], 25)
    assert X.shape == (25, 2)
    assert np.allclose(np.unique(X[:, 0]), [1, 3, 5, 7, 9])


def test_n_to_reach_interpolates_log_log() -> None:
    ns = [10, 100, 1000]
    assert n_to_reach(ns, np.array([0.1, 0.01, 0.001]), 0.01) == pytest.approx(100)
    assert n_to_reach(ns, np.array([0.1, 0.01, 0.001]), 0.0316227766) == pytest.approx(31.6227766)
    assert n_to_reach(ns, np.array([0.1, 0.05, 0.04]), 0.01) is None
    assert n_to_reach(ns, np.array([0.005, 0.004, 0.003]), 0.01) == 10
