"""Ordering a batch of positions for short motor travel.

Motors move simultaneously, so a move takes as long as its slowest axis:
``max_i |dx_i| / speed_i``; axes without a speed cost nothing. With no speeds at all the cost
is the Euclidean distance (in unit-cube coordinates when bounds are given). The order is an
open path from ``start``: exact (Held-Karp dynamic programming) up to :data:`EXACT_MAX`
points, nearest neighbour + 2-opt beyond.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

EXACT_MAX = 9  # Held-Karp is O(2^q q^2): ~40k steps at q = 9


def _scaled(X: np.ndarray, speeds: Sequence[float | None],
            bounds: Sequence[tuple[float, float]] | None) -> tuple[np.ndarray, bool]:
    """Coordinates in which the cost is a plain norm, and whether it is the max norm."""
    X = np.asarray(X, dtype=np.float64)
    if any(s is not None for s in speeds):
        inv = np.array([0.0 if s is None else 1.0 / s for s in speeds])
        return X * inv, True
    if bounds is not None:
        b = np.asarray(bounds, dtype=np.float64)
        return (X - b[:, 0]) / (b[:, 1] - b[:, 0]), False
    return X, False


def travel_time(a: Sequence[float], b: Sequence[float], speeds: Sequence[float | None],
                bounds: Sequence[tuple[float, float]] | None = None) -> float:
    """Cost of moving from ``a`` to ``b``.

    Args:
        a: ``d`` raw coordinates.
        b: ``d`` raw coordinates.
        speeds: ``d`` motor speeds (units/s), ``None`` for axes that cost nothing.
        bounds: ``d`` pairs ``(lower, upper)``; normalize the Euclidean fallback.

    Returns:
        Seconds (``max_i |b_i - a_i| / speed_i``), or the Euclidean distance when no axis
        has a speed.
    """
    P, is_max = _scaled(np.array([a, b], dtype=np.float64), speeds, bounds)
    diff = np.abs(P[1] - P[0])
    return float(diff.max(initial=0.0) if is_max else np.sqrt((diff**2).sum()))


def cost_matrix(X: np.ndarray, speeds: Sequence[float | None],
                bounds: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """Pairwise :func:`travel_time` of ``n x d`` raw positions, ``n x n``."""
    P, is_max = _scaled(X, speeds, bounds)
    diff = np.abs(P[:, None, :] - P[None, :, :])
    return diff.max(-1, initial=0.0) if is_max else np.sqrt((diff**2).sum(-1))


def path_cost(order: Sequence[int], C: np.ndarray, first: np.ndarray | None) -> float:
    """Cost of visiting ``order``; ``first[i]`` is the cost from the start to ``i``."""
    total = 0.0 if first is None or not len(order) else float(first[order[0]])
    return total + float(sum(C[i, j] for i, j in zip(order[:-1], order[1:], strict=True)))


def order_for_travel(X: np.ndarray, speeds: Sequence[float | None],
                     start: Sequence[float] | None = None,
                     bounds: Sequence[tuple[float, float]] | None = None) -> list[int]:
    """The visiting order of ``q`` positions that keeps total travel short.

    Args:
        X: ``q x d`` raw positions.
        speeds: ``d`` motor speeds, ``None`` for free axes.
        start: ``d`` current position; ``None`` lets the path start anywhere.
        bounds: ``d`` pairs used to normalize the Euclidean fallback.

    Returns:
        A permutation of ``range(q)``; optimal for ``q <= EXACT_MAX``.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    q = X.shape[0]
    if q <= 1:
        return list(range(q))
    pts = X if start is None else np.vstack([X, np.asarray(start, dtype=np.float64)])
    C_all = cost_matrix(pts, speeds, bounds)
    C = C_all[:q, :q]
    first = np.zeros(q) if start is None else C_all[q, :q]
    if q <= EXACT_MAX:
        return _held_karp(C, first)
    return _two_opt(_nearest_neighbour(C, first), C, first)


def _held_karp(C: np.ndarray, first: np.ndarray) -> list[int]:
    q = C.shape[0]
    best: dict[tuple[int, int], tuple[float, int]] = {
        (1 << i, i): (float(first[i]), -1) for i in range(q)}
    for size in range(2, q + 1):
        for subset in combinations(range(q), size):
            mask = sum(1 << i for i in subset)
            for last in subset:
                prev_mask = mask & ~(1 << last)
                best[(mask, last)] = min(
                    (best[(prev_mask, j)][0] + C[j, last], j) for j in subset if j != last)
    full = (1 << q) - 1
    last = min(range(q), key=lambda i: best[(full, i)][0])
    order, mask = [], full
    while last != -1:
        order.append(last)
        _, prev = best[(mask, last)]
        mask &= ~(1 << last)
        last = prev
    return order[::-1]


def _nearest_neighbour(C: np.ndarray, first: np.ndarray) -> list[int]:
    q = C.shape[0]
    order = [int(np.argmin(first))]
    left = set(range(q)) - {order[0]}
    while left:
        here = order[-1]
        nxt = min(left, key=lambda j: (C[here, j], j))
        order.append(nxt)
        left.remove(nxt)
    return order


def _two_opt(order: list[int], C: np.ndarray, first: np.ndarray) -> list[int]:
    """Reverse segments while that shortens the open path (the start stays fixed)."""
    n = len(order)

    def edge(a: int, b: int) -> float:  # a = -1 is the start, b = -1 the free end
        if b == -1:
            return 0.0
        return float(first[b]) if a == -1 else float(C[a, b])

    improved = True
    while improved:
        improved = False
        for i in range(n - 1):
            for j in range(i + 1, n):
                prev = order[i - 1] if i > 0 else -1
                nxt = order[j + 1] if j + 1 < n else -1
                old = edge(prev, order[i]) + edge(order[j], nxt)
                new = edge(prev, order[j]) + edge(order[i], nxt)
                if new < old - 1e-12:
                    order[i:j + 1] = order[i:j + 1][::-1]
                    improved = True
    return order
