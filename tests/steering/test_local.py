"""Tiled (large-N) posterior: accuracy against the exact GP, incremental ingest, fantasies,
and the engine's automatic switch with its accuracy check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from server.steering import engine as engmod
from server.steering.engine import GPEngine
from server.steering.gp import ExactGP, Hyperparameters
from server.steering.local import CHECK_TOLERANCE, TiledGP
from server.steering.spec import ExperimentSpec, Output, Parameter

D = torch.float64


def truth(U: np.ndarray) -> np.ndarray:
    """Waves plus a narrow hot spot."""
    return np.sin(6 * U[:, 0]) * np.cos(4 * U[:, 1]) + np.exp(-((U - 0.7) ** 2).sum(1) / 0.01)


def problem(n: int, ls: float = 0.15, seed: int = 0
            ) -> tuple[Hyperparameters, torch.Tensor, torch.Tensor, torch.Tensor]:
    hp = Hyperparameters(kernel="matern52", lengthscale=np.array([ls, ls]), noise=1e-3,
                         mean_constant=0.0, y_mean=0.0, y_std=1.0)
    rng = np.random.default_rng(seed)
    U = rng.random((n, 2))
    y = truth(U) + 0.03 * rng.standard_normal(n)
    return hp, torch.tensor(U), torch.tensor(y), torch.full((n,), 1e-3, dtype=D)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


@pytest.mark.parametrize("ls", [0.08, 0.3])
def test_tiled_mean_is_within_5_percent_of_the_exact_gp(ls: float) -> None:
    hp, X, y, noise = problem(3000, ls)
    tiled = TiledGP.build(hp, X, y, noise, leaf=300, cap=800)
    assert tiled.n_tiles >= 8 and max(g.n for g in tiled.gps) <= 800
    exact = ExactGP.build(hp, X, y, noise)
    G = torch.tensor(np.random.default_rng(1).random((1500, 2)))
    with torch.no_grad():
        m_t, v_t = tiled.predict(G)
        m_e, v_e = exact.predict(G)
    f = torch.tensor(truth(G.numpy()))
    # the bound: RMSE against the truth within 5% of the exact GP's ...
    assert rmse(m_t, f) <= 1.05 * rmse(m_e, f)
    # ... and the difference to the exact mean itself is 5% of the exact GP's error
    assert rmse(m_t, m_e) <= 0.05 * rmse(m_e, f)
    assert torch.allclose(v_t.sqrt(), v_e.sqrt(), rtol=0.05, atol=1e-3)
    assert tiled.check() <= CHECK_TOLERANCE


def test_tiled_incremental_ingest_equals_rebuild() -> None:
    hp, X, y, noise = problem(1400, seed=2)
    X[1050] = torch.tensor([1.1, 0.5], dtype=D)  # outside the bounds: no tile reaches it ...
    P = torch.tensor(np.random.default_rng(3).random((300, 2)))  # 200 candidates + 100 Z
    inc = TiledGP.build(hp, X[:1000], y[:1000], noise[:1000], (P, 200), leaf=200, cap=500)
    for a, b in [(1000, 1001), (1001, 1008), (1008, 1100), (1100, 1400)]:
        inc = inc.extend(X[a:b], y[a:b], noise[a:b])
    ref = TiledGP.build(hp, X, y, noise, (P, 200), layout=inc.layout)
    for mi, mr in zip(inc.members, ref.members, strict=True):
        assert np.array_equal(np.sort(mi), mr)
    assert any(1050 in m for m in inc.members)  # ... but the nearest tile holds it
    G = torch.tensor(np.random.default_rng(4).random((500, 2)))
    with torch.no_grad():
        (m1, v1), (m0, v0) = inc.predict(G), ref.predict(G)
    assert torch.allclose(m1, m0, atol=1e-6) and torch.allclose(v1, v0, atol=1e-6)
    assert torch.allclose(inc.mean_at_train(), ref.mean_at_train(), atol=1e-6)
    fi, fr = inc.fantasies(1e-3), ref.fantasies(1e-3)
    for a, b in zip(fi.candidate_stats(), fr.candidate_stats(), strict=True):
        assert a is not None and b is not None and torch.allclose(a, b, atol=1e-6)


def test_tiled_fantasies_bulk_and_pointwise_agree() -> None:
    hp, X, y, noise = problem(1200, seed=5)
    rng = np.random.default_rng(6)
    P = torch.tensor(rng.random((400, 2)))
    tiled = TiledGP.build(hp, X, y, noise, (P, 300), leaf=200, cap=500)
    f = tiled.fantasies(1e-3)
    assert f.C.shape == (300, 2) and f.Z is not None and f.nz_total == 100
    x0 = f.C[int(torch.argmax(f.candidate_stats()[1]))].clone()
    before = f.candidate_stats()[1].clone()
    f.condition(x0)
    f.condition(torch.tensor([0.5, 0.5], dtype=D))
    mean, var, czsq = f.candidate_stats()
    assert czsq is not None and (var <= before + 1e-12).all() and var.min() < before.max()
    m2, v2, c2 = f.at(f.C)  # routed to each candidate's tile, as the bulk values
    assert c2 is not None
    assert torch.allclose(mean, m2, atol=1e-8) and torch.allclose(var, v2, atol=1e-8)
    assert torch.allclose(czsq, c2, atol=1e-10)
    mu, vu = f.unconditioned(f.C)
    assert torch.allclose(mu, f.mean, atol=1e-8) and torch.allclose(vu, f.var0, atol=1e-8)
    # differentiable, as the polish needs
    x = f.C[:5].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f.at(x)[1].sum(), x)
    assert torch.isfinite(g).all()


def spec(acq: str = "integrated_variance") -> ExperimentSpec:
    return ExperimentSpec(name="t", parameters=(Parameter("x", 0, 1), Parameter("y", 0, 1)),
                          outputs=(Output("I"),), acquisition=acq, seed=1, kernel="matern52",
                          goal="maximize" if acq in ("ucb", "ei") else "map")


def fitted_hp(s: ExperimentSpec) -> dict[str, Any]:
    return {"I": {"kernel": "matern52", "lengthscales_normalized": [0.15, 0.15],
                  "noise_variance_standardized": 1e-3, "mean_constant_standardized": 0.0,
                  "y_mean": 0.0, "y_std": 1.0, "fitted_n": 100}}


@pytest.mark.parametrize("acq", ["variance", "integrated_variance", "ei"])
def test_engine_switches_to_tiles_above_the_threshold(monkeypatch: pytest.MonkeyPatch,
                                                      acq: str) -> None:
    monkeypatch.setattr(engmod, "LEAF", 150)
    monkeypatch.setattr(engmod, "CAP", 400)
    s = spec(acq)
    _, X, y, _ = problem(900, seed=7)
    big = GPEngine(s, hyperparameters=fitted_hp(s), local_above=500)
    exact = GPEngine(s, hyperparameters=fitted_hp(s))
    for e in (big, exact):
        e.ingest(X[:800].numpy(), y[:800, None].numpy())
        e.ingest(X[800:].numpy(), y[800:, None].numpy())  # incremental, into 2-4 tiles
    info = big.model_info()["I"]
    assert info is not None and info["kind"] == "tiled" and info["tiles"] >= 4
    assert info["check_error"] <= CHECK_TOLERANCE
    assert exact.model_info()["I"] == {"kind": "exact", "n": 900}
    G = np.random.default_rng(8).random((400, 2))
    pb, pe = big.posterior(G), exact.posterior(G)
    assert np.abs(pb.mean["I"] - pe.mean["I"]).max() < 0.02
    first = big.suggest(4)
    U = np.array([c.x for c in first])
    assert [c.source for c in first] == [acq] * 4 and ((U >= 0) & (U <= 1)).all()
    second = big.suggest(3, pending=U)
    allx = np.vstack([U, [c.x for c in second]])
    dist = np.sqrt(((allx[:, None] - allx[None]) ** 2).sum(-1)) + np.eye(len(allx))
    assert dist.min() > 1e-3
    post = big.posterior(U)
    assert np.allclose([c.mean["I"] for c in first], post.mean["I"], atol=1e-9)
    assert np.allclose([c.std["I"] for c in first], post.std["I"], atol=1e-9)


def test_engine_keeps_the_exact_gp_when_tiles_fail_their_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engmod, "LEAF", 150)
    monkeypatch.setattr(engmod, "CAP", 300)
    monkeypatch.setattr(engmod, "CHECK_TOLERANCE", -1.0)  # nothing passes
    s = spec()
    _, X, y, _ = problem(700, seed=9)
    e = GPEngine(s, hyperparameters=fitted_hp(s), local_above=500)
    e.ingest(X.numpy(), y[:, None].numpy())
    assert e.model_info()["I"] == {"kind": "exact", "n": 700}
    assert len(e.suggest(2)) == 2
    # too large for the exact GP: the largest tiles that fit the memory budget are kept
    monkeypatch.setattr(engmod, "EXACT_MAX", 600)
    e = GPEngine(s, hyperparameters=fitted_hp(s), local_above=500)
    e.ingest(X.numpy(), y[:, None].numpy())
    info = e.model_info()["I"]
    assert info is not None and info["kind"] == "tiled" and info["largest_tile"] == 600
    assert len(e.suggest(2)) == 2


def test_refit_rebuilds_tiles_and_adds_rows_that_arrived(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.steering import fit, hyper

    monkeypatch.setattr(engmod, "LEAF", 150)
    monkeypatch.setattr(engmod, "CAP", 400)
    s = spec()
    hp = hyper.from_dict(s, fitted_hp(s)["I"])
    _, X, y, _ = problem(800, seed=11)
    e = GPEngine(s, local_above=500)
    e.ingest(X[:700].numpy(), y[:700, None].numpy())

    def quick(Xf: np.ndarray, *args: Any, **kw: Any) -> Hyperparameters:
        e.ingest(X[700:].numpy(), y[700:, None].numpy())  # arrives while the fit runs
        return Hyperparameters(**{**hp.__dict__, "fitted_n": len(Xf)})

    monkeypatch.setattr(fit, "fit_hyperparameters", quick)
    st = e.refit()
    assert st.outputs["I"].fitted_n == 700 and st.outputs["I"].fit_failures == 0
    info = e.model_info()["I"]
    assert info is not None and info["kind"] == "tiled" and info["n"] == 800


def test_nothing_is_prepared_on_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPEngine.prepare: a pending point's fantasy reaches the tiles otherwise than its
    measurement does (the picks after it differed by 0.03 here), so tiled posteriors ask
    afresh."""
    monkeypatch.setattr(engmod, "LEAF", 150)
    monkeypatch.setattr(engmod, "CAP", 400)
    s = spec("variance")
    _, X, y, _ = problem(900, seed=7)
    e = GPEngine(s, hyperparameters=fitted_hp(s), local_above=500)
    e.ingest(X.numpy(), y[:, None].numpy())
    assert e.model_info()["I"]["kind"] == "tiled"  # type: ignore[index]
    assert not e.prepare(1, np.array([c.x for c in e.suggest(1)]))


def test_prepared_picks_are_not_taken_once_an_ingest_tiles_the_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An exact posterior that outgrows twice ``local_above`` is rebuilt by the next ingest,
    here into tiles: picks prepared on the exact one are not taken."""
    monkeypatch.setattr(engmod, "LEAF", 150)
    monkeypatch.setattr(engmod, "CAP", 400)
    s = spec("variance")
    _, X, y, _ = problem(1001, seed=7)
    e = GPEngine(s, hyperparameters=fitted_hp(s), local_above=500)
    e.ingest(X[:400].numpy(), y[:400, None].numpy())
    for a in range(400, 1000, 200):  # grows the exact posterior by extensions
        e.ingest(X[a:a + 200].numpy(), y[a:a + 200, None].numpy())
    assert e.model_info()["I"] == {"kind": "exact", "n": 1000}
    U = np.array([c.x for c in e.suggest(1)])
    assert e.prepare(1, U)
    e.ingest(U, np.sin(3 * U[:, :1]))
    assert e.model_info()["I"]["kind"] == "tiled"  # type: ignore[index]
    assert not e.suggest(1)[0].ahead
