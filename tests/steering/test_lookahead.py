"""GPEngine.prepare: picks computed while the last suggestions are measured, and when an ask
may take them (and when it must not)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from server.steering import gp as gpmod
from server.steering.design import to_unit
from server.steering.engine import GPEngine
from server.steering.spec import Output
from tests.steering.test_engine import data, f, make_spec, xs


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    spec = make_spec(outputs=(Output("I"),))
    e = GPEngine(spec)
    e.ingest(*data(spec, 30))
    e.refit()
    return e.hyperparameters()


def engine(fitted: dict[str, Any], acquisition: str, n: int = 30) -> GPEngine:
    spec = make_spec(outputs=(Output("I"),), acquisition=acquisition)
    e = GPEngine(spec, hyperparameters=fitted)
    e.ingest(*data(spec, n))
    return e


@pytest.mark.parametrize("acq", ["variance", "integrated_variance"])
@pytest.mark.parametrize("q", [1, 3])
def test_prepared_picks_equal_the_asks_own(fitted: dict[str, Any], acq: str, q: int) -> None:
    """For the variance acquisitions the measured values do not move the picks: an ask
    that takes the prepared picks gets what it would have computed itself."""
    ahead, fresh = engine(fitted, acq), engine(fitted, acq)
    first = xs(ahead.suggest(q))
    assert ahead.prepare(q, first)
    for e in (ahead, fresh):
        e.ingest(first, f(first)[:, None])  # measured with the learned noise
    got, want = ahead.suggest(q), fresh.suggest(q)
    assert all(c.ahead for c in got) and not any(c.ahead for c in want)
    np.testing.assert_allclose(xs(got), xs(want), atol=1e-6)
    # the reported posterior is today's (the new values are in it), not the prepared one's
    for g, w in zip(got, want, strict=True):
        assert g.mean["I"] == pytest.approx(w.mean["I"], abs=1e-9)
        assert g.std["I"] == pytest.approx(w.std["I"], abs=1e-9)


@pytest.mark.parametrize("tail_rows", [256, 2])
def test_prepared_picks_report_the_posterior_of_now(monkeypatch: pytest.MonkeyPatch,
                                                    fitted: dict[str, Any],
                                                    tail_rows: int) -> None:
    """The mean and std an ask reports at prepared picks are the posterior's after the tell
    (grown from the prepare's solve, or computed afresh where the factor was merged)."""
    monkeypatch.setattr(gpmod, "TAIL_ROWS", tail_rows)
    e = engine(fitted, "variance")
    first = xs(e.suggest(3))
    assert e.prepare(3, first)
    e.ingest(first, f(first)[:, None] + 0.05)  # values the prepare did not know
    got = e.suggest(3)
    assert all(c.ahead for c in got)
    post = e.posterior(xs(got))
    np.testing.assert_allclose([c.mean["I"] for c in got], post.mean["I"], rtol=1e-12)
    np.testing.assert_allclose([c.std["I"] for c in got], post.std["I"], rtol=1e-10)


def test_prepared_picks_do_not_keep_an_old_factor_alive(monkeypatch: pytest.MonkeyPatch,
                                                        fitted: dict[str, Any]) -> None:
    """Prepared picks refer to their posterior's factor weakly: once ingests merged it into
    a new one (or a refit rebuilt it), the old N x N factor can be freed."""
    import gc
    import weakref

    monkeypatch.setattr(gpmod, "TAIL_ROWS", 2)
    e = engine(fitted, "variance")
    first = xs(e.suggest(3))
    old = weakref.ref(e._outputs[0].gp.chol.base)  # type: ignore[union-attr]
    assert e.prepare(3, first)
    e.ingest(first, f(first)[:, None])  # 3 rows > 2: the tail merges into a new base
    gc.collect()
    assert old() is None
    got = e.suggest(3)  # taken, with the posterior there solved afresh
    assert all(c.ahead for c in got)
    post = e.posterior(xs(got))
    np.testing.assert_allclose([c.mean["I"] for c in got], post.mean["I"], rtol=1e-12)


@pytest.mark.parametrize("change", ["nothing measured", "other position", "another pending",
                                    "refit", "other q", "target not measured"])
def test_a_changed_state_computes_afresh(fitted: dict[str, Any], change: str) -> None:
    e = engine(fitted, "variance")
    first = xs(e.suggest(1))
    assert e.prepare(1, first)
    if change == "nothing measured":  # the suggestion neither measured nor pending
        pass
    elif change == "other position":  # measured 1% of the range away
        e.ingest(first + [0.1, 0.0], f(first)[:, None])
    elif change == "another pending":
        e.ingest(first, f(first)[:, None])
        got = e.suggest(1, pending=np.array([[1.0, 1.0]]))
        assert not got[0].ahead
        return
    elif change == "refit":
        e.ingest(first, f(first)[:, None])
        e.refit()
    elif change == "other q":
        e.ingest(first, f(first)[:, None])
        assert not any(c.ahead for c in e.suggest(2))
        return
    elif change == "target not measured":
        spec2 = make_spec(acquisition="variance")  # outputs I and J; I is the target
        e = GPEngine(spec2)
        e.ingest(*data(spec2, 30))
        e.refit()
        first = xs(e.suggest(1))
        assert e.prepare(1, first)
        e.ingest(first, np.array([[np.nan, 1.0]]))
    assert not e.suggest(1)[0].ahead


def test_still_pending_suggestions_keep_the_prepared_picks(fitted: dict[str, Any]) -> None:
    """An ask before the measurement came (the suggestion still pending) takes them too."""
    e = engine(fitted, "variance")
    first = xs(e.suggest(1))
    assert e.prepare(1, first)
    (c,) = e.suggest(1, pending=first)
    assert c.ahead
    # within the tolerance a motor's readback may differ from the suggested position
    e.ingest(first + [1e-3, 0.0], f(first)[:, None])  # 1e-4 of the 10 mm axis
    assert e.suggest(1)[0].ahead


def test_nothing_is_prepared_where_it_would_not_hold(fitted: dict[str, Any]) -> None:
    spec = make_spec(outputs=(Output("I"),), goal="maximize", kernel="matern32")
    e = GPEngine(spec, hyperparameters=fitted)
    e.ingest(*data(spec, 30))
    assert not e.prepare(1, xs(e.suggest(1)))  # ei follows the values
    for acq in ("misfit_variance", "gradient_variance"):  # weighted by the values: q=1
        mapped = engine(fitted, acq)
        assert not mapped.prepare(2, xs(mapped.suggest(2)))
    fresh = GPEngine(make_spec(outputs=(Output("I"),), acquisition="variance"))
    assert not fresh.prepare(1, np.zeros((1, 2)))  # initial design: nothing to save
    with pytest.raises(Exception, match="pending"):
        engine(fitted, "variance").prepare(1, np.zeros((1, 3)))


def test_a_row_left_out_of_the_model_is_never_skipped(fitted: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed posterior update keeps the old model without the new row; picks prepared on
    it would not know that spot was measured (a review found one re-suggested exactly)."""
    from server.steering.gp import ExactGP

    e = engine(fitted, "variance")
    r = np.array([[5.3, -1.0]])
    real = ExactGP.extend

    def fail(self, *a):  # noqa: ANN001, ANN002, ANN202
        raise RuntimeError("not positive definite")
    monkeypatch.setattr(ExactGP, "extend", fail)
    e.ingest(r, f(r)[:, None])
    monkeypatch.setattr(ExactGP, "extend", real)
    first = xs(e.suggest(1))
    assert not e.prepare(1, first)  # the model lacks r
    e.ingest(first, f(first)[:, None])  # brings r and first in
    assert not e.suggest(1)[0].ahead


@pytest.mark.parametrize("factor, taken", [(1.0, True), (1.9, True), (100.0, False),
                                           (0.01, False)])
def test_measurements_with_another_noise_compute_afresh(fitted: dict[str, Any],
                                                        factor: float, taken: bool) -> None:
    """Pending points are conditioned with the learned noise: a measurement whose own noise
    variance is far from it changes the picks (seen with q=3), so they are not taken."""
    e = engine(fitted, "variance")
    first = xs(e.suggest(3))
    assert e.prepare(3, first)
    hp = e._outputs[0].gp.hp  # type: ignore[union-attr]
    var = factor * hp.noise * hp.y_std**2  # output units
    e.ingest(first, f(first)[:, None], np.full((3, 1), var))
    assert all(c.ahead for c in e.suggest(3)) == taken


@pytest.mark.parametrize("acq", ["misfit_variance", "gradient_variance"])
@pytest.mark.parametrize("surprise", [0.0, 5.0, -5.0])
def test_value_weighted_picks_are_taken_only_while_nothing_beats_them(
        fitted: dict[str, Any], acq: str, surprise: float) -> None:
    """misfit/gradient_variance weight by the values: a prepared pick is taken exactly when,
    under the weights of the new values, it still beats every candidate the ask would
    consider; otherwise the ask computes its own, the same as without a prepared pick."""
    import torch

    from server.steering.gp import DTYPE

    e, twin = engine(fitted, acq), engine(fitted, acq)
    first = xs(e.suggest(1))
    assert e.prepare(1, first)
    picked = e._ahead.U[0].copy()  # type: ignore[union-attr]
    for m in (e, twin):
        m.ingest(first, f(first)[:, None] + surprise)
    (c,) = e.suggest(1)
    scorer = twin._scorer(twin._outputs[0].gp, twin._n)  # type: ignore[arg-type]
    with torch.no_grad():  # the rule, spelled out on the twin (nothing pending)
        best = float(scorer.candidates().max())
        value = float(scorer.at(torch.as_tensor(picked[None, :], dtype=DTYPE))[0])
    assert c.ahead == (value >= best)
    if c.ahead:
        np.testing.assert_allclose(to_unit(e.spec, xs([c]))[0], picked, atol=1e-12)
        post = e.posterior(xs([c]))  # and reports the posterior of now there
        assert c.mean["I"] == pytest.approx(post.mean["I"][0], rel=1e-10)
        assert c.std["I"] == pytest.approx(post.std["I"][0], rel=1e-8)
    else:
        assert xs([c]).tolist() == xs(twin.suggest(1)).tolist()  # the ask's own pick
    if acq == "misfit_variance" and surprise:
        assert not c.ahead  # a surprise at the last spot: a candidate there wins now
    if not surprise:
        assert c.ahead  # the true values: here the prepared pick holds
