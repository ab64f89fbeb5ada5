"""Exact GP posterior with an incrementally grown Cholesky factor, and fantasy conditioning.

Everything here works in *model space*: inputs normalized to the unit cube by the spec's
bounds, outputs standardized by the ``y_mean``/``y_std`` stored with the hyperparameters,
float64 torch tensors. :class:`ExactGP` and :class:`GrowingCholesky` are immutable: an
ingest returns a new object that shares the large base factor with the old one, so a reader
that grabbed a reference under the engine's lock can keep computing without it.

Why a base + tail factor: the lower-triangular factor ``L`` of ``K + diag(noise)`` is kept as
a contiguous ``n0 x n0`` base and a ``t x n`` block of rows appended since. Appending rows to a
single buffer would need a strided view, which LAPACK wrappers copy (a 5000 x 5000 copy
costs ~50 ms); the tail keeps an ingest at O(N^2 k) flops and is merged into a new base every
:data:`TAIL_ROWS` rows (one O(N^2) copy, amortized).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

DTYPE = torch.float64
TAIL_ROWS = 256  # rows appended before the tail is merged into a new contiguous base
JITTERS = (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)  # relative to the mean diagonal
VAR_FLOOR = 1e-12  # posterior variances are clamped here (standardized units)
NOISE_FLOOR = 1e-6  # known (fixed) noise variances are floored here (standardized units)


@dataclass(frozen=True)
class Hyperparameters:
    """Hyperparameters of one output's GP in model space.

    Args:
        kernel: ``"matern52"``, ``"matern32"`` or ``"rbf"``.
        lengthscale: ``d`` ARD lengthscales in normalized (unit-cube) units.
        noise: Homoscedastic noise variance (standardized units): learned, or with known
            per-point variances the median of them, used for new and fantasy points.
        mean_constant: Prior mean (standardized units).
        y_mean: Mean subtracted from the output before standardizing.
        y_std: Scale the output is divided by.
        noise_model: ``"learned"`` or ``"fixed"`` (fitted with known per-point variances).
        outputscale: Prior variance (standardized units); 1 with botorch's default model.
        fitted_n: Number of points the hyperparameters were fitted on (0: not fitted).
    """

    kernel: str
    lengthscale: np.ndarray
    noise: float
    mean_constant: float
    y_mean: float
    y_std: float
    noise_model: str = "learned"
    outputscale: float = 1.0
    fitted_n: int = 0


def kernel_matrix(kernel: str, A: Tensor, B: Tensor, lengthscale: Tensor,
                  outputscale: float = 1.0) -> Tensor:
    """Stationary ARD covariance, equal to gpytorch's ``MaternKernel``/``RBFKernel``.

    Args:
        kernel: ``"matern52"``, ``"matern32"`` or ``"rbf"``.
        A: ``n x d`` points.
        B: ``m x d`` points.
        lengthscale: ``d`` lengthscales.
        outputscale: Prior variance multiplying the correlation.

    Returns:
        ``n x m`` covariance matrix.
    """
    center = A.reshape(-1, A.shape[-1]).mean(0)  # as gpytorch does, for precision
    a = (A - center) / lengthscale
    b = (B - center) / lengthscale
    if kernel not in ("rbf", "matern52", "matern32"):
        raise ValueError(f"unknown kernel {kernel!r}")
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        k = _correlation(kernel, a, b)
    else:
        k = _correlation_inplace(kernel, a, b)
    return k * outputscale if outputscale != 1.0 else k


def kernel_with_gradient(kernel: str, A: Tensor, x: Tensor, lengthscale: Tensor,
                         outputscale: float = 1.0) -> Tensor:
    """Covariance ``k(A, x)`` and its gradient in ``x``, analytically (no autograd).

    ``dk(a, x)/dx = -outputscale * g(r) (x - a) / l^2`` with ``g = k`` (RBF),
    ``5/3 (1 + s) e^-s`` (Matern 5/2, ``s = sqrt5 r``) or ``3 e^-s`` (Matern 3/2,
    ``s = sqrt3 r``), as in :meth:`ExactGP.mean_gradient`. Written for small ``b`` (the
    polish): the cost is the number of torch calls, so there are few.

    Args:
        kernel: ``"matern52"``, ``"matern32"`` or ``"rbf"``.
        A: ``n x d`` points.
        x: ``b x d`` points.
        lengthscale: ``d`` lengthscales.
        outputscale: Prior variance multiplying the correlation.

    Returns:
        ``n x b x (1 + d)``: ``[i, j, 0] = k(A_i, x_j)``, ``[i, j, 1:] = dk(A_i, x_j)/dx_j``.
    """
    u = (x / lengthscale).unsqueeze(0) - (A / lengthscale).unsqueeze(1)  # n x b x d
    return kernel_with_gradient_of(kernel, u, lengthscale, outputscale)


def kernel_with_gradient_of(kernel: str, u: Tensor, lengthscale: Tensor,
                            outputscale: float = 1.0) -> Tensor:
    """:func:`kernel_with_gradient` from the differences ``u = (x - a) / l`` (``... x d``,
    any batch shape; overwritten); returns ``... x (1 + d)``."""
    r = torch.linalg.vector_norm(u, dim=-1)
    if kernel == "rbf":
        k = r.square_().mul_(-0.5).exp_()
        g = k
    elif kernel == "matern52":
        s = r.mul_(math.sqrt(5.0))
        e = torch.neg(s).exp_()
        g = (s + 1.0).mul_(e)  # (1 + s) e^-s
        k = torch.addcmul(g, s.square(), e, value=1.0 / 3.0)  # (1 + s + s^2/3) e^-s
        g = g.mul_(5.0 / 3.0)
    elif kernel == "matern32":
        s = r.mul_(math.sqrt(3.0))
        e = torch.neg(s).exp_()
        k = (s + 1.0).mul_(e)
        g = e.mul_(3.0)
    else:
        raise ValueError(f"unknown kernel {kernel!r}")
    scale = torch.cat([lengthscale.new_ones(1), -1.0 / lengthscale])
    if outputscale != 1.0:
        scale = scale * outputscale
    return torch.cat([k.unsqueeze(-1), u.mul_(g.unsqueeze(-1))], -1).mul_(scale)


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    return (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2)
            - 2.0 * a @ b.transpose(-1, -2)).clamp_min(1e-30)


def _correlation(kernel: str, a: Tensor, b: Tensor) -> Tensor:
    """Differentiable version (used for the polish, with few columns)."""
    r2 = _sq_dist(a, b)
    if kernel == "rbf":
        return torch.exp(-0.5 * r2)
    r = r2.sqrt()
    if kernel == "matern52":
        s = math.sqrt(5.0) * r
        return (1.0 + s + s.pow(2) / 3.0) * torch.exp(-s)
    s = math.sqrt(3.0) * r
    return (1.0 + s) * torch.exp(-s)


def _correlation_inplace(kernel: str, a: Tensor, b: Tensor) -> Tensor:
    """Same values with two allocations and ten passes over the ``n x m`` result instead of
    ~14 allocations: large matrices are memory-bound, and the polish's local models pay this
    on every ask. Matern's ``sqrt(nu)`` scales the inputs (``d`` columns) instead of ``r``."""
    if kernel != "rbf":
        root = math.sqrt(5.0) if kernel == "matern52" else math.sqrt(3.0)
        a, b = a * root, b * root
    # |a|^2 - 2 a.b + |b|^2: the row norms go in as the gemm's input, one pass fewer
    a2, b2 = a.pow(2).sum(-1, keepdim=True), b.pow(2).sum(-1).unsqueeze(-2)
    if a.dim() == b.dim() == 2:
        k = torch.addmm(a2, a, b.T, alpha=-2.0)
    else:  # batches (the per-start local models)
        k = (a @ b.transpose(-1, -2)).mul_(-2.0).add_(a2)
    k.add_(b2).clamp_min_(1e-30)
    if kernel == "rbf":
        return k.mul_(-0.5).exp_()
    s = k.sqrt_()  # sqrt(nu) r
    e = torch.neg(s).exp_()
    if kernel == "matern52":
        poly = torch.addcmul(s + 1.0, s, s, value=1.0 / 3.0)  # 1 + s + s^2 / 3
    else:
        poly = s.add_(1.0)
    return poly.mul_(e)


class GrowingCholesky:
    """Lower Cholesky factor ``L`` (``n x n``) stored as a contiguous base plus appended rows.

    Args:
        base: ``n0 x n0`` lower-triangular, contiguous.
        tail: ``t x n`` rows of ``L`` below the base (``n = n0 + t``).
    """

    def __init__(self, base: Tensor, tail: Tensor | None = None) -> None:
        self.base = base
        n0 = base.shape[0]
        self.tail = base.new_zeros(0, n0) if tail is None else tail
        self.n0 = n0
        self.n = n0 + self.tail.shape[0]

    def solve(self, B: Tensor) -> Tensor:
        """``L^{-1} B`` for ``B`` of shape ``n x k``; differentiable in ``B``."""
        W1 = torch.linalg.solve_triangular(self.base, B[: self.n0], upper=False)
        if self.n == self.n0:
            return W1
        D = self.tail[:, self.n0:]
        W2 = torch.linalg.solve_triangular(D, B[self.n0:] - self.tail[:, : self.n0] @ W1,
                                           upper=False)
        return torch.cat([W1, W2], 0)

    def solve_grown(self, W: Tensor, B_new: Tensor, base: Tensor | None) -> Tensor | None:
        """``L^{-1} B`` from ``W = L_m^{-1} B[:m]``, solved on an earlier factor ``L_m`` of
        ``m`` rows that this one grew from by appending rows (it had the same ``base``), and
        ``B_new = B[m:]``: ``O(n (n - m) k)`` instead of ``O(n^2 k)``. ``None`` if the base
        is another or ``None`` (a merge of the tail, or a rebuild): then solve afresh."""
        m = W.shape[0]
        if base is not self.base or not self.n0 <= m <= self.n:
            return None
        if m == self.n:
            return W
        rows = self.tail[m - self.n0:]  # rows m.. of L
        W2 = torch.linalg.solve_triangular(rows[:, m:], B_new - rows[:, :m] @ W, upper=False)
        return torch.cat([W, W2], 0)

    def solve_transpose(self, B: Tensor) -> Tensor:
        """``L^{-T} B`` for ``B`` of shape ``n x k``."""
        if self.n == self.n0:
            return torch.linalg.solve_triangular(self.base.T, B, upper=True)
        D = self.tail[:, self.n0:]
        W2 = torch.linalg.solve_triangular(D.T, B[self.n0:], upper=True)
        rhs = B[: self.n0] - self.tail[:, : self.n0].T @ W2
        W1 = torch.linalg.solve_triangular(self.base.T, rhs, upper=True)
        return torch.cat([W1, W2], 0)

    def append(self, rows: Tensor) -> GrowingCholesky:
        """A new factor with ``k`` rows ``[L21, L22]`` (``k x (n + k)``) appended."""
        k = rows.shape[0]
        t = self.tail.shape[0]
        if t + k > TAIL_ROWS:
            return GrowingCholesky(self._merged(rows))
        tail = torch.zeros(t + k, self.n + k, dtype=rows.dtype)
        tail[:t, : self.n] = self.tail
        tail[t:] = rows
        return GrowingCholesky(self.base, tail)

    def _merged(self, rows: Tensor | None = None) -> Tensor:
        extra = 0 if rows is None else rows.shape[0]
        L = torch.zeros(self.n + extra, self.n + extra, dtype=self.base.dtype)
        L[: self.n0, : self.n0] = self.base
        L[self.n0: self.n, : self.n] = self.tail
        if rows is not None:
            L[self.n:] = rows
        return L

    def dense(self) -> Tensor:
        """The full ``n x n`` factor (for tests and debugging)."""
        return self._merged()


def cholesky_with_jitter(K: Tensor) -> tuple[Tensor, float]:
    """Cholesky of ``K``, adding jitter ``1e-8 .. 1e-4`` of the mean diagonal on failure.

    Args:
        K: ``n x n`` symmetric matrix.

    Returns:
        ``(L, jitter)``: the factor and the absolute jitter added to the diagonal.

    Raises:
        torch.linalg.LinAlgError: If even the largest jitter fails, or ``K`` is not finite.
    """
    # Non-finite entries are found through the factor, not by scanning K first (that scan
    # cost ~40% of a factorization of the polish's local model): a NaN or -inf in row i of
    # K makes the pivot of row i non-positive or NaN (LAPACK then reports it in info), and
    # +inf on the diagonal leaves an inf on L's diagonal. K is symmetric, so its lower
    # triangle, the only one LAPACK reads, holds every bad entry.
    scale = float(K.diagonal().mean()) if K.shape[0] else 1.0
    if not math.isfinite(scale):
        raise torch.linalg.LinAlgError("covariance matrix holds NaN or inf")
    for rel in JITTERS:
        jitter = rel * scale
        Kj = K + jitter * torch.eye(K.shape[0], dtype=K.dtype) if jitter else K
        L, info = torch.linalg.cholesky_ex(Kj)
        if int(info) == 0:
            if not bool(torch.isfinite(L.diagonal()).all()):
                raise torch.linalg.LinAlgError("covariance matrix holds NaN or inf")
            return L, jitter
    if not bool(torch.isfinite(K).all()):
        raise torch.linalg.LinAlgError("covariance matrix holds NaN or inf")
    raise torch.linalg.LinAlgError(f"not positive definite even with jitter {JITTERS[-1]:g}")


class RowStack:
    """Rows of an ``n x p`` matrix stored as a contiguous base plus appended rows; immutable.

    The same trick as :class:`GrowingCholesky`: appending copies only the tail, which is
    merged into a new base every :data:`TAIL_ROWS` rows.

    Args:
        base: ``n0 x p``.
        tail: ``t x p`` rows below the base.
    """

    def __init__(self, base: Tensor, tail: Tensor | None = None) -> None:
        self.base = base
        self.tail = base.new_zeros(0, base.shape[1]) if tail is None else tail
        self.n0 = base.shape[0]
        self.n = self.n0 + self.tail.shape[0]

    def tmatmul(self, B: Tensor, cols: slice = slice(None)) -> Tensor:
        """``A[:, cols]^T B`` for ``B`` of shape ``n x k``."""
        out = self.base[:, cols].T @ B[: self.n0]
        if self.tail.shape[0]:
            out = out + self.tail[:, cols].T @ B[self.n0:]
        return out

    def append(self, rows: Tensor) -> RowStack:
        """A new stack with ``k x p`` rows appended."""
        if self.tail.shape[0] + rows.shape[0] > TAIL_ROWS:
            return RowStack(torch.cat([self.base, self.tail, rows]))
        return RowStack(self.base, torch.cat([self.tail, rows]))

    def dense(self) -> Tensor:
        """The full ``n x p`` matrix."""
        return torch.cat([self.base, self.tail])


@dataclass(frozen=True)
class PointCache:
    """The posterior at a fixed point set ``P = [C; Z]``, kept up to date on every ingest.

    With it an ask starts from cached quantities instead of an ``O(N^2 p)`` solve: the
    candidate scan costs ``O(p)``, and each fantasy an ``O(N^2)`` solve plus ``O(N p)``.

    Args:
        P: ``p x d`` points: ``M`` candidates, then the integration points.
        M: Number of candidates.
        W: ``L^{-1} K(X, P)`` (``n x p``).
        mean: Posterior mean at ``P``.
        var: Posterior variance at ``P`` (not clamped).
        cross: ``Nz x M`` posterior covariance between integration points and candidates,
            or ``None`` without integration points.
        nearest: ``(index, squared distance)`` of the training point nearest to each
            integration point, in lengthscale units (``misfit_variance``'s weights), or
            ``None`` without integration points.
    """

    P: Tensor
    M: int
    W: RowStack
    mean: Tensor
    var: Tensor
    cross: Tensor | None
    nearest: tuple[Tensor, Tensor] | None = None

    @classmethod
    def build(cls, gp: ExactGP, P: Tensor, M: int) -> PointCache:
        """From scratch, ``O(N^2 p)``."""
        W = gp.chol.solve(gp.k(gp.X, P))
        mean = gp.hp.mean_constant + W.T @ gp.v
        var = gp.hp.outputscale - W.pow(2).sum(0)
        cross = nearest = None
        if P.shape[0] > M:
            cross = gp.k(P[M:], P[:M]) - W[:, M:].T @ W[:, :M]
            nearest = nearest_points(P[M:], gp.X, gp.lengthscale)
        return cls(P, M, RowStack(W), mean, var, cross, nearest)

    def extend(self, R: Tensor, v_new: Tensor, X_new: Tensor, n_old: int,
               lengthscale: Tensor) -> PointCache:
        """With ``k`` new rows ``R`` (``k x p``) of ``W`` and ``v`` (``k``) for the new
        training points ``X_new`` (rows ``n_old ...``), ``O(k p Nz)``."""
        cross = nearest = None
        if self.cross is not None:
            cross = self.cross - R[:, self.M:].T @ R[:, : self.M]
        if self.nearest is not None:
            idx, d2 = nearest_points(self.P[self.M:], X_new, lengthscale)
            closer = d2 < self.nearest[1]  # ties keep the older point, as argmin would
            nearest = (torch.where(closer, idx + n_old, self.nearest[0]),
                       torch.where(closer, d2, self.nearest[1]))
        return PointCache(self.P, self.M, self.W.append(R), self.mean + R.T @ v_new,
                          self.var - R.pow(2).sum(0), cross, nearest)


def nearest_points(Z: Tensor, X: Tensor, lengthscale: Tensor) -> tuple[Tensor, Tensor]:
    """For each row of ``Z``, the index of the nearest row of ``X`` and their squared
    distance, both in lengthscale units (exact, not the matrix-product shortcut)."""
    d = torch.cdist(Z / lengthscale, X / lengthscale,
                    compute_mode="donot_use_mm_for_euclid_dist")
    dmin, idx = d.min(1)
    return idx, dmin.pow(2)


class ExactGP:
    """Exact GP posterior of one output, in model space; immutable.

    Args:
        hp: Hyperparameters.
        X: ``n x d`` normalized training inputs.
        y: ``n`` standardized training outputs.
        noise: ``n`` noise variances (standardized units).
        chol: Factor of ``K(X, X) + diag(noise) + jitter I``.
        v: ``n`` vector ``L^{-1} (y - mean_constant)``.
        jitter: Jitter on the diagonal (also added to appended rows).
        cache: The posterior at a fixed point set (candidates of the acquisition), or
            ``None``.
    """

    def __init__(self, hp: Hyperparameters, X: Tensor, y: Tensor, noise: Tensor,
                 chol: GrowingCholesky, v: Tensor, jitter: float,
                 cache: PointCache | None = None) -> None:
        self.hp = hp
        self.X, self.y, self.noise, self.chol, self.v, self.jitter = X, y, noise, chol, v, jitter
        self.lengthscale = torch.as_tensor(hp.lengthscale, dtype=DTYPE)
        self.cache = cache

    @property
    def n(self) -> int:
        """Number of training points."""
        return self.X.shape[0]

    def k(self, A: Tensor, B: Tensor) -> Tensor:
        """Prior covariance ``n x m`` between ``A`` (``n x d``) and ``B`` (``m x d``)."""
        return kernel_matrix(self.hp.kernel, A, B, self.lengthscale, self.hp.outputscale)

    @classmethod
    def build(cls, hp: Hyperparameters, X: Tensor, y: Tensor, noise: Tensor,
              points: tuple[Tensor, int] | None = None) -> ExactGP:
        """Factor from scratch, O(N^3).

        Args:
            hp: Hyperparameters.
            X: ``n x d`` normalized inputs (``n >= 1``).
            y: ``n`` standardized outputs.
            noise: ``n`` noise variances (standardized units).
            points: ``(P, M)`` to keep a :class:`PointCache` at: ``M`` candidates followed by
                integration points.

        Raises:
            torch.linalg.LinAlgError: If the covariance cannot be factored.
        """
        kern = kernel_matrix(hp.kernel, X, X, torch.as_tensor(hp.lengthscale, dtype=DTYPE),
                             hp.outputscale)
        kern.diagonal().add_(noise)
        L, jitter = cholesky_with_jitter(kern)
        del kern
        chol = GrowingCholesky(L)
        v = chol.solve((y - hp.mean_constant).unsqueeze(-1)).squeeze(-1)
        gp = cls(hp, X, y, noise, chol, v, jitter)
        if points is not None:
            gp.cache = PointCache.build(gp, *points)
        return gp

    def extend(self, X: Tensor, y: Tensor, noise: Tensor) -> ExactGP:
        """Posterior with ``k`` more points, by a rank-k extension of the factor, O(N^2 k)
        (plus ``O(N p k)`` for the point cache).

        Falls back to a rebuild (with more jitter) if the extension is not positive definite.

        Args:
            X: ``k x d`` normalized inputs.
            y: ``k`` standardized outputs.
            noise: ``k`` noise variances.
        """
        X_all = torch.cat([self.X, X])
        y_all = torch.cat([self.y, y])
        noise_all = torch.cat([self.noise, noise])
        W = self.chol.solve(self.k(self.X, X))  # n x k
        S = self.k(X, X) + torch.diag(noise + self.jitter) - W.T @ W
        D, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0 or not torch.isfinite(D).all():
            points = None if self.cache is None else (self.cache.P, self.cache.M)
            return ExactGP.build(self.hp, X_all, y_all, noise_all, points)
        chol = self.chol.append(torch.cat([W.T, D], 1))
        v_new = torch.linalg.solve_triangular(
            D, (y - self.hp.mean_constant - W.T @ self.v).unsqueeze(-1), upper=False
        ).squeeze(-1)
        cache = None
        if self.cache is not None:
            c = self.cache
            R = torch.linalg.solve_triangular(D, self.k(X, c.P) - c.W.tmatmul(W).T, upper=False)
            cache = c.extend(R, v_new, X, self.n, self.lengthscale)
        return ExactGP(self.hp, X_all, y_all, noise_all, chol, torch.cat([self.v, v_new]),
                       self.jitter, cache)

    def predict(self, Xq: Tensor) -> tuple[Tensor, Tensor]:
        """Latent posterior mean and variance (standardized units).

        Args:
            Xq: ``q x d`` normalized points.

        Returns:
            ``(mean, var)``, each of shape ``q``.
        """
        return self._mean_var(self.chol.solve(self.k(self.X, Xq)))

    def _mean_var(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance from ``W = L^{-1} K(X, Xq)``."""
        mean = self.hp.mean_constant + W.T @ self.v
        var = (self.hp.outputscale - W.pow(2).sum(0)).clamp_min(VAR_FLOOR)
        return mean, var

    def solve_grown(self, Xq: Tensor, W: Tensor, base: Tensor | None) -> Tensor | None:
        """``L^{-1} K(X, Xq)`` from ``W``, the same on an earlier posterior that this one grew
        from by :meth:`extend` (its factor's ``chol.base`` is ``base``): ``O(N k q)`` for the
        ``k`` rows added since instead of ``O(N^2 q)``. ``None`` where the factor was merged
        or rebuilt since."""
        m = W.shape[0]
        return self.chol.solve_grown(W, self.k(self.X[m:], Xq), base)

    def predict_grown(self, Xq: Tensor, W: Tensor, base: Tensor | None
                      ) -> tuple[Tensor, Tensor] | None:
        """:meth:`predict` by :meth:`solve_grown` (``None`` where that is ``None``)."""
        grown = self.solve_grown(Xq, W, base)
        return None if grown is None else self._mean_var(grown)

    def mean_gradient(self, Xq: Tensor) -> Tensor:
        """Gradient of the posterior mean at ``Xq`` (``q x d``), ``q x d``, analytically:
        ``O(N^2)`` for ``alpha`` plus ``O(q N d)``.

        ``grad mean(x) = sum_i alpha_i dk(x, x_i)/dx`` with ``dk/dx = -g(r) (x - x_i) / l^2``,
        ``g = k`` (RBF), ``5/3 (1 + s) e^-s`` (Matern 5/2, ``s = sqrt5 r``) or ``3 e^-s``
        (Matern 3/2, ``s = sqrt3 r``).
        """
        alpha = self.chol.solve_transpose(self.v.unsqueeze(-1)).squeeze(-1)
        ls2 = self.lengthscale.pow(2)
        center = self.X.mean(0)
        a, b = (Xq - center) / self.lengthscale, (self.X - center) / self.lengthscale
        g = a @ b.T  # q x N, in place from here on: this is memory-bound
        g.mul_(-2.0).add_(a.pow(2).sum(-1, keepdim=True)).add_(b.pow(2).sum(-1))
        g.clamp_min_(1e-30)
        if self.hp.kernel == "rbf":
            g.mul_(-0.5).exp_()
        else:
            s = g.sqrt_().mul_(math.sqrt(5.0 if self.hp.kernel == "matern52" else 3.0))
            e = torch.neg(s).exp_()
            g = s.add_(1.0).mul_(e).mul_(5.0 / 3.0) if self.hp.kernel == "matern52" \
                else e.mul_(3.0)
        g.mul_(alpha * self.hp.outputscale)
        return (g @ self.X - g.sum(1, keepdim=True) * Xq) / ls2

    def mean_at_train(self) -> Tensor:
        """Posterior mean at the ``n`` training inputs, O(N^2): ``y - (noise + jitter) alpha``."""
        alpha = self.chol.solve_transpose(self.v.unsqueeze(-1)).squeeze(-1)
        return self.y - (self.noise + self.jitter) * alpha


class StatsAt(torch.autograd.Function):
    """``at(x)`` of a posterior state with the analytic gradients of its
    ``stats_with_jacobian`` (:class:`Fantasies`, :class:`~server.steering.localgp.LocalGPs`):
    ``StatsAt.apply(x, state) -> (mean, var, czsq)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, state: Any) -> tuple[Tensor, Tensor, Tensor]:
        mean, var, czsq, dmean, dvar, dczsq = state.stats_with_jacobian(x.detach())
        ctx.save_for_backward(dmean, dvar, dczsq)
        return mean, var, czsq

    @staticmethod
    def backward(ctx: Any, g_mean: Tensor, g_var: Tensor, g_czsq: Tensor
                 ) -> tuple[Tensor, None]:
        dmean, dvar, dczsq = ctx.saved_tensors
        grad = g_mean.unsqueeze(-1) * dmean + g_var.unsqueeze(-1) * dvar
        return grad + g_czsq.unsqueeze(-1) * dczsq, None


class Fantasies:
    """Posterior at fixed points ``P``, conditioned on fantasy observations one at a time.

    Kriging believer: a fantasy's value is the posterior mean, so means never change and only
    the covariance is updated: each fantasy appends one row to an extended Cholesky factor.
    ``P`` is the stack of the candidate set ``C`` and (optionally) integration points ``Z``;
    the ``Z x C`` posterior cross-covariance is maintained for integrated variance. Nothing
    of ``gp`` (or its :class:`PointCache`) is modified.

    Args:
        gp: The posterior to condition.
        C: ``M x d`` candidate points (normalized).
        Z: ``Nz x d`` integration points, or ``None``.
        noise: Noise variance of a fantasy observation (standardized units).
        nz_total: Integration points the integrated variance is averaged over (default
            ``Nz``, or the sum of ``weights``); larger when ``Z`` is a subset of a global set.
        weights: ``Nz`` non-negative weights of the integration points (weighted integrated
            variance), or ``None`` for equal weights.
    """

    def __init__(self, gp: ExactGP, C: Tensor, Z: Tensor | None, noise: float, *,
                 nz_total: float | None = None, weights: Tensor | None = None) -> None:
        P = C if Z is None else torch.cat([C, Z])
        W = gp.chol.solve(gp.k(gp.X, P))  # N x (M + Nz)
        mean = gp.hp.mean_constant + W.T @ gp.v
        var = gp.hp.outputscale - W.pow(2).sum(0)
        M = C.shape[0]
        cross = None if Z is None else gp.k(Z, C) - W[:, M:].T @ W[:, :M]  # Nz x M
        self._init(gp, P, M, RowStack(W), mean, var, cross, noise, nz_total, weights)

    @classmethod
    def from_cache(cls, gp: ExactGP, noise: float, *, nz_total: float | None = None,
                   weights: Tensor | None = None) -> Fantasies:
        """From ``gp.cache`` (no solve against the training data)."""
        c = gp.cache
        if c is None:
            raise ValueError("the posterior has no point cache")
        self = cls.__new__(cls)
        self._init(gp, c.P, c.M, c.W, c.mean, c.var, c.cross, noise, nz_total, weights)
        return self

    def _init(self, gp: ExactGP, P: Tensor, M: int, W: RowStack, mean: Tensor, var: Tensor,
              cross: Tensor | None, noise: float, nz_total: float | None,
              weights: Tensor | None) -> None:
        self.gp, self.P, self.M, self.W, self.noise = gp, P, M, W, noise
        self.C = P[:M]
        self.Z = P[M:] if cross is not None or P.shape[0] > M else None  # may have 0 rows
        self.weights = weights
        default = max(P.shape[0] - M, 1) if weights is None else float(weights.sum())
        self.nz_total = nz_total or default
        self.mean, self.var, self.cross = mean, var.clamp_min(VAR_FLOOR), cross
        self.var0 = self.var  # before any fantasy
        self.U = P.new_zeros(0, P.shape[0])  # fantasy rows of the extended factor
        self.Xf = P.new_zeros(0, P.shape[1])
        self.Wf = P.new_zeros(gp.n, 0)
        self.Df = P.new_zeros(0, 0)
        self._memo: tuple[Tensor, Tensor] | None = None  # last (x, L^{-1} k(X, x)), no grad

    @property
    def n_fantasies(self) -> int:
        """Number of fantasies conditioned on."""
        return self.Xf.shape[0]

    def candidate_stats(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(mean, var, czsq)`` on the candidate set, ``czsq`` as in :meth:`at`."""
        M = self.M
        czsq = None if self.cross is None else self._weigh(self.cross.pow(2)) / self.nz_total
        return self.mean[:M], self.var[:M], czsq

    def _weigh(self, sq: Tensor) -> Tensor:
        """Sum over the integration points (rows of ``sq``, ``Nz x b``), weighted."""
        return sq.sum(0) if self.weights is None else self.weights @ sq

    def _solve(self, x: Tensor) -> Tensor:
        gp = self.gp
        if not x.requires_grad and self._memo is not None:
            mx, mw = self._memo
            if mx.shape == x.shape and torch.equal(mx, x):
                return mw
        wx = gp.chol.solve(gp.k(gp.X, x))  # N x b
        if not x.requires_grad:
            self._memo = (x.clone(), wx)
        return wx

    def remember(self, x: Tensor, wx: Tensor) -> None:
        """Take ``wx = L^{-1} K(X, x)`` (``N x b``) as known for the points ``x``: the next
        :meth:`at` or :meth:`unconditioned` there skips its ``O(N^2)`` solve (the engine
        grows it from a prepared pick's, :meth:`GrowingCholesky.solve_grown`)."""
        self._memo = (x.clone(), wx)

    def unconditioned(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance at ``x`` (``b x d``) without the fantasies; free right
        after :meth:`at` at the same points."""
        gp = self.gp
        wx = self._solve(x)
        return (gp.hp.mean_constant + wx.T @ gp.v,
                (gp.hp.outputscale - wx.pow(2).sum(0)).clamp_min(VAR_FLOOR))

    def _at(self, x: Tensor, wx: Tensor | None = None
            ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        gp = self.gp
        wx = self._solve(x) if wx is None else wx
        mean = gp.hp.mean_constant + wx.T @ gp.v
        var = gp.hp.outputscale - wx.pow(2).sum(0)
        ux = None
        if self.n_fantasies:
            cov_f = gp.k(self.Xf, x) - self.Wf.T @ wx
            ux = torch.linalg.solve_triangular(self.Df, cov_f, upper=False)  # F x b
            var = var - ux.pow(2).sum(0)
        cov_z = None
        if self.Z is not None:
            cov_z = gp.k(self.Z, x) - self.W.tmatmul(wx, slice(self.M, None))
            if ux is not None:
                cov_z = cov_z - self.U[:, self.M:].T @ ux
        return mean, var.clamp_min(VAR_FLOOR), cov_z, ux

    def at(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Conditioned posterior at arbitrary points; differentiable in ``x``.

        With gradients wanted, the derivatives of the three statistics are computed
        analytically in the same pass (:meth:`stats_with_jacobian`) and autograd only
        chains them through the acquisition: the polish's evaluations are small, so the
        cost is the number of torch calls, and autograd's backward doubled it.

        Args:
            x: ``b x d`` normalized points.

        Returns:
            ``(mean (b), var (b), czsq (b) or None)`` in standardized units, where ``czsq`` is
            the squared posterior covariance with the integration points, summed over them
            and divided by ``nz_total``.
        """
        if x.requires_grad and torch.is_grad_enabled():
            mean, var, czsq = StatsAt.apply(x, self)
            return mean, var, (None if self.Z is None else czsq)
        mean, var, cov_z, _ = self._at(x)
        czsq = None if cov_z is None else self._weigh(cov_z.pow(2)) / self.nz_total
        return mean, var, czsq

    def stats_with_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor,
                                                       Tensor, Tensor]:
        """:meth:`at`'s statistics and their gradients in ``x``, analytically.

        Every statistic at point ``j`` depends on ``x_j`` only, so each Jacobian is ``b x d``.
        Each point brings ``1 + d`` columns, its covariance and its ``d`` derivatives,
        through the same linear algebra (one triangular solve with ``b (1 + d)`` columns),
        and a squared norm and its gradient come out of one product of the columns with
        the first of their group.

        Args:
            x: ``b x d`` normalized points (not differentiated through).

        Returns:
            ``(mean, var, czsq, dmean, dvar, dczsq)``: three ``b`` vectors (``czsq`` zero
            without integration points), then three ``b x d`` gradients.
        """
        gp, (b, d) = self.gp, x.shape
        kern, ls, os_ = gp.hp.kernel, gp.lengthscale, gp.hp.outputscale
        c = 1 + d

        def squares(R: Tensor) -> Tensor:  # rows of groups [w, dw] -> [w^2, w dw] per row
            R3 = R.reshape(R.shape[0], b, c)
            return (R3 * R3[..., :1]).reshape(R.shape[0], b * c)

        WR = gp.chol.solve(kernel_with_gradient(kern, gp.X, x, ls, os_).reshape(-1, b * c))
        md = (WR.T @ gp.v).reshape(b, c)  # [w.v, dw.v]
        q = squares(WR).sum(0).reshape(b, c)
        UR = None
        if self.n_fantasies:
            F = self.n_fantasies
            CF = kernel_with_gradient(kern, self.Xf, x, ls, os_).reshape(F, b * c) \
                - self.Wf.T @ WR
            UR = torch.linalg.solve_triangular(self.Df, CF, upper=False)  # F x b (1 + d)
            q = q + squares(UR).sum(0).reshape(b, c)
        var = os_ - q[:, 0]
        dvar = q[:, 1:] * (-2.0 * (var >= VAR_FLOOR)).unsqueeze(-1)
        czsq, dczsq = x.new_zeros(b), x.new_zeros(b, d)
        if self.Z is not None and len(self.Z):
            Nz = len(self.Z)
            CZ = kernel_with_gradient(kern, self.Z, x, ls, os_).reshape(Nz, b * c) \
                - self.W.tmatmul(WR, slice(self.M, None))
            if UR is not None:
                CZ = CZ - self.U[:, self.M:].T @ UR
            z = (self._weigh(squares(CZ)) / self.nz_total).reshape(b, c)
            czsq, dczsq = z[:, 0], 2.0 * z[:, 1:]
        return (gp.hp.mean_constant + md[:, 0], var.clamp_min(VAR_FLOOR), czsq, md[:, 1:],
                dvar, dczsq)

    def condition(self, x: Tensor) -> float:
        """Condition on a fantasy observation at ``x`` (shape ``d``), in place.

        Returns:
            The posterior mean at ``x`` (the believed value).
        """
        gp = self.gp
        x = x.reshape(1, -1)
        wx = self._solve(x) if self._memo is None else self._memo_column(x)
        mean_x = float(gp.hp.mean_constant + wx[:, 0] @ gp.v)
        cov_p = gp.k(x, self.P) - self.W.tmatmul(wx).T  # 1 x (M + Nz)
        var_x = gp.hp.outputscale - float(wx.pow(2).sum())
        if self.n_fantasies:
            cov_f = gp.k(self.Xf, x) - self.Wf.T @ wx
            ux = torch.linalg.solve_triangular(self.Df, cov_f, upper=False)  # F x 1
            cov_p = cov_p - ux.T @ self.U
            var_x -= float(ux.pow(2).sum())
        else:
            ux = x.new_zeros(0, 1)
        d = math.sqrt(max(var_x, VAR_FLOOR) + self.noise)
        r = cov_p / d
        self.U = torch.cat([self.U, r])
        self.var = (self.var - r.squeeze(0).pow(2)).clamp_min(VAR_FLOOR)
        if self.cross is not None:
            self.cross = self.cross - r[:, self.M:].T @ r[:, : self.M]
        F = self.n_fantasies
        Df = x.new_zeros(F + 1, F + 1)
        Df[:F, :F] = self.Df
        Df[F, :F] = ux.squeeze(-1)
        Df[F, F] = d
        self.Df = Df
        self.Wf = torch.cat([self.Wf, wx], 1)
        self.Xf = torch.cat([self.Xf, x])
        self._memo = None
        return mean_x

    def _memo_column(self, x: Tensor) -> Tensor:
        """``L^{-1} k(X, x)`` for one point, reused from the last :meth:`at` if it had it."""
        assert self._memo is not None
        mx, mw = self._memo
        hit = (mx == x).all(1).nonzero()
        if len(hit):
            i = int(hit[0])
            return mw[:, i:i + 1]
        return self._solve(x)
