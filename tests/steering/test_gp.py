"""Exact posterior: incremental Cholesky, fantasy conditioning, kernels vs gpytorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpytorch.kernels import MaternKernel, RBFKernel

from server.steering import gp as gpmod
from server.steering.gp import ExactGP, Fantasies, Hyperparameters, kernel_matrix

D = torch.float64


def _hp(kernel: str = "matern52", d: int = 2, noise: float = 1e-3) -> Hyperparameters:
    return Hyperparameters(kernel=kernel, lengthscale=np.linspace(0.15, 0.3, d), noise=noise,
                           mean_constant=0.1, y_mean=0.0, y_std=1.0)


def _data(n: int, d: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=D)
    y = torch.sin(6 * X[:, 0]) + X[:, 1:].sum(-1) + 0.01 * torch.randn(n, generator=g, dtype=D)
    return X, y


@pytest.mark.parametrize("kernel,cls,kw", [("matern52", MaternKernel, {"nu": 2.5}),
                                           ("matern32", MaternKernel, {"nu": 1.5}),
                                           ("rbf", RBFKernel, {})])
def test_kernels_match_gpytorch(kernel: str, cls: type, kw: dict) -> None:
    A, _ = _data(30, d=3, seed=1)
    B, _ = _data(20, d=3, seed=2)
    ls = torch.tensor([0.1, 0.5, 2.0], dtype=D)
    ref = cls(ard_num_dims=3, **kw).to(D)
    ref.lengthscale = ls
    with torch.no_grad():
        expected = ref(A, B).to_dense()
        same = ref(A, A).to_dense()
    assert torch.allclose(kernel_matrix(kernel, A, B, ls), expected, atol=1e-10, rtol=0)
    assert torch.allclose(kernel_matrix(kernel, A, A, ls), same, atol=1e-10, rtol=0)
    # the differentiable path (used by the polish) gives the same values
    Ag = A.clone().requires_grad_(True)
    assert torch.allclose(kernel_matrix(kernel, Ag, B, ls).detach(), expected, atol=1e-10,
                          rtol=0)


@pytest.mark.parametrize("tail_rows", [256, 3])
def test_incremental_equals_scratch(monkeypatch: pytest.MonkeyPatch, tail_rows: int) -> None:
    monkeypatch.setattr(gpmod, "TAIL_ROWS", tail_rows)
    X, y = _data(60)
    noise = torch.full((60,), 1e-3, dtype=D)
    noise[::7] = 0.05
    hp = _hp()
    inc = ExactGP.build(hp, X[:10], y[:10], noise[:10])
    for a, b in [(10, 11), (11, 15), (15, 16), (16, 40), (40, 41), (41, 60)]:
        inc = inc.extend(X[a:b], y[a:b], noise[a:b])
    ref = ExactGP.build(hp, X, y, noise)
    Xq, _ = _data(50, seed=5)
    m1, v1 = inc.predict(Xq)
    m0, v0 = ref.predict(Xq)
    assert torch.allclose(m1, m0, atol=1e-8) and torch.allclose(v1, v0, atol=1e-8)
    assert torch.allclose(inc.chol.dense(), ref.chol.dense(), atol=1e-8)
    assert torch.allclose(inc.mean_at_train(), ref.predict(X)[0], atol=1e-8)
    B = torch.randn(60, 3, dtype=D)
    L = inc.chol.dense()
    assert torch.allclose(L @ inc.chol.solve(B), B, atol=1e-8)
    assert torch.allclose(L.T @ inc.chol.solve_transpose(B), B, atol=1e-8)


def test_predict_grown_equals_predict_until_the_factor_is_merged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ask's posterior at prepared picks: grown from the prepared posterior's solve by
    the rows appended since, equal to a fresh predict; refused once the tail was merged
    into a new base (or the posterior rebuilt), where the old solve no longer applies."""
    monkeypatch.setattr(gpmod, "TAIL_ROWS", 8)
    X, y = _data(40)
    noise = torch.full((40,), 1e-3, dtype=D)
    Xq, _ = _data(3, seed=5)
    then = ExactGP.build(_hp(), X[:20], y[:20], noise[:20]).extend(X[20:22], y[20:22],
                                                                  noise[20:22])
    W = then.chol.solve(then.k(then.X, Xq))
    now = then
    for a, b in ((22, 23), (23, 25), (25, 28)):  # 1, 2, 3 rows: the tail holds 2 + 6 <= 8
        now = now.extend(X[a:b], y[a:b], noise[a:b])
        got = now.predict_grown(Xq, W, then.chol.base)
        assert got is not None
        for g, want in zip(got, now.predict(Xq), strict=True):
            assert torch.allclose(g, want, rtol=1e-12, atol=1e-14)
    assert now.predict_grown(Xq, W, then.chol.base) is not None
    merged = now.extend(X[28:30], y[28:30], noise[28:30])  # 10 > 8 tail rows: a new base
    assert merged.chol.base is not then.chol.base
    assert merged.predict_grown(Xq, W, then.chol.base) is None
    rebuilt = ExactGP.build(_hp(), X[:28], y[:28], noise[:28])
    assert rebuilt.predict_grown(Xq, W, then.chol.base) is None


def test_duplicates_get_jitter() -> None:
    X = torch.tensor([[0.5, 0.5]] * 4 + [[0.1, 0.2]], dtype=D)
    y = torch.tensor([1.0, 1.1, 0.9, 1.0, 0.0], dtype=D)
    gp = ExactGP.build(_hp(noise=0.0), X, y, torch.zeros(5, dtype=D))
    assert gp.jitter > 0
    gp = gp.extend(X[:2], y[:2], torch.zeros(2, dtype=D))
    mean, var = gp.predict(X)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()


@pytest.mark.parametrize("n", [5, 60, 300])  # LAPACK's unblocked and blocked factorizations
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_cholesky_refuses_non_finite_covariances(n: int, bad: float) -> None:
    """Non-finite entries are found through the factor (no scan of K first), wherever they
    sit: on the diagonal, off it, in the first and the last row."""
    g = torch.Generator().manual_seed(n)
    A = torch.randn(n, n, generator=g, dtype=D)
    K = A @ A.T + n * torch.eye(n, dtype=D)
    assert torch.allclose(gpmod.cholesky_with_jitter(K)[0], torch.linalg.cholesky(K))
    for i, j in [(0, 0), (n - 1, 0), (n // 2, n // 3), (n - 1, n - 1)]:
        Kb = K.clone()
        Kb[i, j] = Kb[j, i] = bad
        with pytest.raises(torch.linalg.LinAlgError, match="NaN or inf"):
            gpmod.cholesky_with_jitter(Kb)


def test_fantasy_reduces_variance_to_noise() -> None:
    X, y = _data(20)
    hp = _hp(noise=1e-2)
    gp = ExactGP.build(hp, X, y, torch.full((20,), hp.noise, dtype=D))
    C, _ = _data(40, seed=3)
    Z, _ = _data(30, seed=4)
    fant = Fantasies(gp, C, Z, noise=hp.noise)
    f = C[7]
    before = float(fant.var[7])
    fant.condition(f)
    assert float(fant.var[7]) <= hp.noise * 1.0001 < before
    f2 = torch.tensor([0.93, 0.07], dtype=D)
    fant.condition(f2)
    # equal to the exact posterior with the fantasies added as observations
    ref = gp.extend(torch.stack([f, f2]), torch.zeros(2, dtype=D),
                    torch.full((2,), hp.noise, dtype=D))
    _, var_ref = ref.predict(torch.cat([C, Z]))
    assert torch.allclose(fant.var, var_ref, atol=1e-10)
    _, var_at, czsq = fant.at(C[:5])
    assert torch.allclose(var_at, var_ref[:5], atol=1e-10)
    W = ref.chol.solve(ref.k(ref.X, torch.cat([Z, C[:5]])))
    cov_ref = ref.k(Z, C[:5]) - W[:, :30].T @ W[:, 30:]
    assert czsq is not None and torch.allclose(czsq, cov_ref.pow(2).mean(0), atol=1e-10)
    assert fant.cross is not None and torch.allclose(fant.cross[:, :5], cov_ref, atol=1e-10)


@pytest.mark.parametrize("tail_rows", [256, 3])
def test_point_cache_incremental_equals_scratch(monkeypatch: pytest.MonkeyPatch,
                                                tail_rows: int) -> None:
    monkeypatch.setattr(gpmod, "TAIL_ROWS", tail_rows)
    X, y = _data(50)
    noise = torch.full((50,), 1e-3, dtype=D)
    P, _ = _data(70, seed=7)  # 40 candidates, 30 integration points
    hp = _hp()
    inc = ExactGP.build(hp, X[:5], y[:5], noise[:5], points=(P, 40))
    for a, b in [(5, 6), (6, 20), (20, 21), (21, 50)]:
        inc = inc.extend(X[a:b], y[a:b], noise[a:b])
    ref = ExactGP.build(hp, X, y, noise, points=(P, 40))
    ci, cr = inc.cache, ref.cache
    assert ci is not None and cr is not None and ci.cross is not None and cr.cross is not None
    assert torch.allclose(ci.W.dense(), cr.W.dense(), atol=1e-6)
    assert torch.allclose(ci.mean, cr.mean, atol=1e-6)
    assert torch.allclose(ci.var, cr.var, atol=1e-6)
    assert torch.allclose(ci.cross, cr.cross, atol=1e-6)
    # the nearest training point of each integration point (misfit weights), kept by extend
    assert ci.nearest is not None and cr.nearest is not None
    dist = torch.cdist(P[40:] / ref.lengthscale, X / ref.lengthscale)
    assert torch.equal(ci.nearest[0], dist.argmin(1)) and torch.equal(ci.nearest[0], cr.nearest[0])
    assert torch.allclose(ci.nearest[1], dist.min(1).values.pow(2), atol=1e-12)
    m, v = ref.predict(P)
    assert torch.allclose(ci.mean, m, atol=1e-6) and torch.allclose(ci.var, v, atol=1e-6)
    # fantasies from the cache behave as fantasies computed from scratch
    var0, cross0 = ci.var.clone(), ci.cross.clone()
    direct = Fantasies(ref, P[:40], P[40:], noise=1e-3)
    cached = Fantasies.from_cache(inc, noise=1e-3)
    for f in (direct, cached):
        f.at(P[3:6])  # memoizes a solve that condition() reuses
        f.condition(P[4])
        f.condition(torch.tensor([0.2, 0.9], dtype=D))
    for a, b in zip(direct.candidate_stats(), cached.candidate_stats(), strict=True):
        assert a is not None and b is not None and torch.allclose(a, b, atol=1e-6)
    xq = torch.rand(4, 2, dtype=D, generator=torch.Generator().manual_seed(9))
    for a, b in zip(direct.at(xq), cached.at(xq), strict=True):
        assert a is not None and b is not None and torch.allclose(a, b, atol=1e-6)
    assert torch.equal(ci.var, var0) and torch.equal(ci.cross, cross0)  # cache untouched


def test_fantasies_with_an_empty_integration_set() -> None:
    X, y = _data(20)
    gp = ExactGP.build(_hp(), X, y, torch.full((20,), 1e-3, dtype=D))
    C, _ = _data(10, seed=3)
    fant = Fantasies(gp, C, C.new_zeros(0, 2), noise=1e-3, nz_total=50)
    fant.condition(C[0])
    _, _, czsq = fant.candidate_stats()
    assert czsq is not None and torch.equal(czsq, torch.zeros(10, dtype=D))
    _, _, czsq = fant.at(C[:3])
    assert czsq is not None and torch.equal(czsq, torch.zeros(3, dtype=D))


@pytest.mark.parametrize("kernel", ["matern52", "matern32", "rbf"])
@pytest.mark.parametrize("case", ["plain", "fantasies", "integration", "weighted", "empty_z"])
def test_analytic_gradients_match_autograd(kernel: str, case: str) -> None:
    """The polish's analytic gradients (``Fantasies.at`` with ``requires_grad``) equal
    autograd through the plain formulas (``Fantasies._at``), values included."""
    d = 3
    X, y = _data(60, d)
    hp = Hyperparameters(kernel=kernel, lengthscale=np.array([0.2, 0.3, 0.5]), noise=1e-3,
                         mean_constant=0.1, y_mean=0.0, y_std=1.0, outputscale=1.3)
    gp = ExactGP.build(hp, X, y, torch.full((60,), 1e-3, dtype=D))
    C, _ = _data(20, d, seed=1)
    Z, _ = _data(30, d, seed=2)
    g = torch.Generator().manual_seed(4)
    weights = torch.rand(30, generator=g, dtype=D) if case == "weighted" else None
    Zc = {"plain": None, "fantasies": None, "empty_z": Z[:0]}.get(case, Z)
    fant = Fantasies(gp, C, Zc, 1e-3, weights=weights)
    if case != "plain":
        for x in _data(3, d, seed=5)[0]:
            fant.condition(x)
    x = torch.rand(4, d, generator=g, dtype=D, requires_grad=True)
    mean, var, cov_z, _ = fant._at(x)
    ref = [mean, var] + ([] if cov_z is None else [fant._weigh(cov_z.pow(2)) / fant.nz_total])
    new = [t for t in fant.at(x) if t is not None]
    assert len(new) == len(ref)
    for r, n_ in zip(ref, new, strict=True):
        torch.testing.assert_close(n_, r, rtol=1e-10, atol=1e-12)
        (gr,) = torch.autograd.grad(r.sum(), x, retain_graph=True)
        (gn,) = torch.autograd.grad(n_.sum(), x, retain_graph=True)
        if case == "empty_z" and r is ref[-1]:  # autograd's sum over no rows gives NaN
            assert torch.equal(gn, torch.zeros_like(gn))
            continue
        torch.testing.assert_close(gn, gr, rtol=1e-7, atol=1e-10 * float(gr.abs().max()))
