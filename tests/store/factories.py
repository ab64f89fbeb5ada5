"""Small builders of store inputs."""

from __future__ import annotations

from typing import Any

from server.store.base import NewMeasurement, NewSuggestion

SPEC: dict[str, Any] = {
    "name": "gradient film",
    "parameters": [{"name": "x", "lower": 0.0, "upper": 10.0},
                   {"name": "y", "lower": -5.0, "upper": 5.0}],
    "outputs": [{"name": "intensity"}],
    "goal": "map",
}


def measurement(i: float, **kw: Any) -> NewMeasurement:
    """A measurement at a position derived from ``i``; ``kw`` sets key, suggestion_id, ..."""
    return NewMeasurement(position={"x": float(i), "y": -float(i) / 10},
                          values={"intensity": 0.5 * i}, **kw)


def suggestion(i: float, expires_at: float | None = None) -> NewSuggestion:
    """A pending suggestion at ``x = i``."""
    return NewSuggestion(position={"x": float(i), "y": 0.0}, mean={"intensity": 1.0},
                         std={"intensity": 0.1}, acquisition=0.25, source="gp",
                         expires_at=expires_at)
