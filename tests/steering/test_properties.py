"""Property tests: whatever valid data arrives, in whatever order, suggestions stay in
bounds and out of forbidden regions, and duplicates never take a fit down."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.steering.engine import GPEngine
from server.steering.spec import ExperimentSpec

torch.set_num_threads(1)


@st.composite
def specs(draw: st.DrawFn) -> ExperimentSpec:
    d = draw(st.integers(1, 3))
    params = []
    for i in range(d):
        lo = draw(st.floats(-100, 100, allow_nan=False))
        width = draw(st.floats(0.01, 100, allow_nan=False))
        params.append({"name": f"p{i}", "lower": lo, "upper": lo + width,
                       "speed": draw(st.none() | st.floats(0.1, 10))})
    boxes = []
    for _ in range(draw(st.integers(0, 2))):
        p = params[draw(st.integers(0, d - 1))]
        a, b = sorted(draw(st.floats(0, 0.6)) + np.array([0, draw(st.floats(0.05, 0.3))]))
        span = p["upper"] - p["lower"]
        boxes.append({p["name"]: [p["lower"] + a * span, p["lower"] + b * span]})
    return ExperimentSpec.from_dict({
        "name": "prop", "parameters": params, "outputs": [{"name": "y"}, {"name": "z"}],
        "goal": draw(st.sampled_from(["map", "maximize", "minimize"])),
        "acquisition": draw(st.sampled_from([None, "variance", "integrated_variance", "ucb",
                                             "ei"])),
        "kernel": draw(st.sampled_from(["matern52", "matern32", "rbf"])),
        "forbidden": boxes, "initial_design": draw(st.integers(0, 5)),
        "seed": draw(st.integers(0, 1000))})


def _check(spec: ExperimentSpec, X: np.ndarray) -> None:
    lo = np.array([p.lower for p in spec.parameters])
    hi = np.array([p.upper for p in spec.parameters])
    assert np.all(X >= lo) and np.all(X <= hi)
    for x in X:
        assert not spec.is_forbidden(dict(zip(spec.parameter_names, x, strict=True)))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True, database=None)
@given(spec=specs(), data=st.data())
def test_any_sequence_keeps_suggestions_valid(spec: ExperimentSpec, data: st.DataObject) -> None:
    engine = GPEngine(spec)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    pending = np.zeros((0, spec.dim))
    for _ in range(data.draw(st.integers(2, 6))):
        action = data.draw(st.sampled_from(["suggest", "measure", "duplicate", "refit"]))
        if action == "suggest":
            q = data.draw(st.integers(1, 4))
            got = np.array([c.x for c in engine.suggest(q, pending)]).reshape(-1, spec.dim)
            assert 1 <= len(got) <= q
            _check(spec, got)
            pending = np.vstack([pending, got])
        elif action in ("measure", "duplicate"):
            k = data.draw(st.integers(1, 6))
            if action == "duplicate" and engine.status().n:
                # the same spot again, and again a hair away: must never crash a fit
                base = pending[:1] if len(pending) else np.array(
                    [[p.lower for p in spec.parameters]])
                X = np.repeat(base, k, axis=0)
                X[1:] += 1e-12 * rng.standard_normal(X[1:].shape)
                X = np.clip(X, [p.lower for p in spec.parameters],
                            [p.upper for p in spec.parameters])
            else:
                X = np.array([[rng.uniform(p.lower, p.upper) for p in spec.parameters]
                              for _ in range(k)])
            Y = np.c_[np.sin(X.sum(axis=1)), rng.normal(size=k)]
            Y[rng.random(k) < 0.3, 1] = np.nan  # the second output sometimes missing
            engine.ingest(X, Y)
            pending = pending[k:]
        else:
            status = engine.refit()
            assert status.n == engine.status().n
    final = np.array([c.x for c in engine.suggest(3, pending)]).reshape(-1, spec.dim)
    _check(spec, final)
    post = engine.posterior(final)
    assert all(np.all(np.isfinite(s) | np.isnan(post.mean[k])) for k, s in post.std.items())
