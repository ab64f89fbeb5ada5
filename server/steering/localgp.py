"""One small exact GP per polish start, batched: the polish's view of the posterior.

The polish (:func:`server.steering.optimize.polish`) moves each start a short way uphill, and
near a start the posterior is determined by the nearby data (the screening effect of
Matern/RBF kernels). One GP of the ``k`` training points nearest to *its* start, per start,
is that model at the smallest cost: ``b`` factors of ``k x k`` instead of one of the union of
the neighbourhoods (up to ``b k``: 9x the flops of the factor and 3x of each solve when the
starts lie apart). The ``b`` models are one batch of tensors, so an evaluation costs the
same number of torch calls as one model's. Each model is conditioned on the same fantasies
and sees the integration points within its own reach, weighted as in the full state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from server.steering.gp import VAR_FLOOR, StatsAt, kernel_matrix, kernel_with_gradient_of


class LocalGPs:
    """``b`` exact GPs, model ``j`` on the ``k`` training points nearest to start ``j``.

    Exposes :meth:`at` as :class:`~server.steering.gp.Fantasies` does (point ``j`` of ``x``
    is evaluated on model ``j``), which is all a :class:`~server.steering.acquisition.Scorer`
    bound to it needs for the polish.

    Args:
        kernel, lengthscale, outputscale, mean_constant: The full posterior's
            hyperparameters (model space).
        L: ``b x k x k`` lower Cholesky factors of ``K + diag(noise)``.
        X: ``b x k x d`` training inputs.
        v: ``b x k`` vectors ``L^{-1} (y - mean_constant)``.
        Z: ``b x z x d`` integration points per model (padded), or ``None``.
        zweights: ``b x z`` their weights (0 on padding).
        nz_total: What the weighted squared covariances are divided by (as the full state).
        noise: Noise variance of a fantasy observation.
    """

    def __init__(self, kernel: str, lengthscale: Tensor, outputscale: float,
                 mean_constant: float, L: Tensor, X: Tensor, v: Tensor, Z: Tensor | None,
                 zweights: Tensor | None, nz_total: float, noise: float) -> None:
        self.kernel, self.ls, self.os, self.c = kernel, lengthscale, outputscale, mean_constant
        self.L, self.X, self.v = L, X, v
        self.Z, self.zweights, self.nz_total, self.noise = Z, zweights, nz_total, noise
        b, k, d = X.shape
        self.Wz = None if Z is None else torch.linalg.solve_triangular(
            L, kernel_matrix(kernel, X, Z, lengthscale, outputscale), upper=False)  # b x k x z
        self.Xf = X.new_zeros(0, d)
        self.Wf = X.new_zeros(b, k, 0)  # L^{-1} k(X, Xf)
        self.Df = X.new_zeros(b, 0, 0)  # fantasy block of the extended factor
        self.Uz = X.new_zeros(b, 0, 0 if Z is None else Z.shape[1])  # fantasy rows at Z

    @classmethod
    def build(cls, gp: Any, starts: Tensor, near: Any, fant: Any) -> LocalGPs | None:
        """Models around ``starts`` (``b x d``) from the full posterior ``gp`` (an
        :class:`~server.steering.gp.ExactGP` or a tiled one: ``X``, ``y``, ``noise``, ``hp``,
        ``lengthscale``) and its fantasy state ``fant`` (``Z``, ``weights``, ``nz_total``,
        ``noise``, ``Xf``); ``None`` if a factor needs jitter (the caller falls back).

        Args:
            gp: The full posterior.
            starts: ``b x d`` normalized points.
            near: ``torch.topk`` of the distances (lengthscale units) from the starts to
                ``gp.X``: the ``k`` nearest training points of each start (``b x k``).
            fant: The fantasy state of the acquisition.
        """
        ls, hp = gp.lengthscale, gp.hp
        idx = near.indices  # b x k
        X = gp.X[idx]
        K = kernel_matrix(hp.kernel, X, X, ls, hp.outputscale)
        K.diagonal(dim1=-2, dim2=-1).add_(gp.noise[idx])
        L, info = torch.linalg.cholesky_ex(K)
        if bool((info != 0).any()) or not bool(torch.isfinite(L).all()):
            return None
        v = torch.linalg.solve_triangular(L, (gp.y[idx] - hp.mean_constant).unsqueeze(-1),
                                          upper=False).squeeze(-1)
        Z, zw = None, None
        if fant.Z is not None:  # the integration points within reach of the data, as the
            # union model would have them (reach: the farthest k-th neighbour of a start)
            reach = near.values[:, -1].max()
            inside = torch.cdist(starts / ls, fant.Z / ls) <= reach  # b x Nz
            size = max(int(inside.sum(1).max()), 1)
            order = torch.argsort((~inside).to(torch.int8), dim=1, stable=True)[:, :size]
            Z = fant.Z[order]  # b x size x d, padded with outside points of weight 0
            base = (torch.ones(fant.Z.shape[0], dtype=X.dtype) if fant.weights is None
                    else fant.weights)
            zw = base[order] * torch.gather(inside, 1, order)
        local = cls(hp.kernel, ls, hp.outputscale, hp.mean_constant, L, X, v, Z, zw,
                    fant.nz_total, fant.noise)
        for x in fant.Xf:
            local.condition(x)
        return local

    def _kernel(self, A: Tensor, x: Tensor) -> Tensor:
        """``[k, dk/dx]`` of model ``j``'s points ``A[j]`` (``b x n x d``) at ``x[j]``:
        ``b x n x (1 + d)``."""
        u = (x / self.ls).unsqueeze(1) - A / self.ls
        return kernel_with_gradient_of(self.kernel, u, self.ls, self.os)

    def condition(self, x: Tensor) -> None:
        """Condition every model on a fantasy observation at ``x`` (``d``), as
        :meth:`~server.steering.gp.Fantasies.condition` does."""
        b = self.X.shape[0]
        xb = x.reshape(1, 1, -1).expand(b, 1, -1)
        wx = torch.linalg.solve_triangular(
            self.L, kernel_matrix(self.kernel, self.X, xb, self.ls, self.os), upper=False)
        var = self.os - wx.square().sum((1, 2))  # b
        F = self.Xf.shape[0]
        ux = wx.new_zeros(b, 0, 1)
        if F:
            cov_f = (kernel_matrix(self.kernel, self.Xf, x.reshape(1, -1), self.ls, self.os)
                     - self.Wf.transpose(1, 2) @ wx)  # b x F x 1
            ux = torch.linalg.solve_triangular(self.Df, cov_f, upper=False)
            var = var - ux.square().sum((1, 2))
        dd = (var.clamp_min(VAR_FLOOR) + self.noise).sqrt()  # b
        if self.Z is not None:
            cov_z = (kernel_matrix(self.kernel, xb, self.Z, self.ls, self.os)
                     - wx.transpose(1, 2) @ self.Wz - ux.transpose(1, 2) @ self.Uz)  # b x 1 x z
            self.Uz = torch.cat([self.Uz, cov_z / dd.reshape(b, 1, 1)], 1)
        Df = wx.new_zeros(b, F + 1, F + 1)
        Df[:, :F, :F] = self.Df
        Df[:, F, :F] = ux.squeeze(-1)
        Df[:, F, F] = dd
        self.Df = Df
        self.Wf = torch.cat([self.Wf, wx], 2)
        self.Xf = torch.cat([self.Xf, x.reshape(1, -1)])

    def stats_with_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor,
                                                       Tensor, Tensor]:
        """As :meth:`server.steering.gp.Fantasies.stats_with_jacobian`, point ``j`` on
        model ``j``."""
        b, d = x.shape
        WR = torch.linalg.solve_triangular(self.L, self._kernel(self.X, x), upper=False)
        md = (WR.transpose(1, 2) @ self.v.unsqueeze(-1)).squeeze(-1)  # b x c: [w.v, dw.v]
        q = (WR * WR[..., :1]).sum(1)  # b x c: [|w|^2, w.dw]
        UR = None
        F = self.Xf.shape[0]
        if F:
            Kf = self._kernel(self.Xf.unsqueeze(0).expand(b, F, d), x)  # b x F x c
            UR = torch.linalg.solve_triangular(
                self.Df, Kf - self.Wf.transpose(1, 2) @ WR, upper=False)
            q = q + (UR * UR[..., :1]).sum(1)
        var = self.os - q[:, 0]
        dvar = q[:, 1:] * (-2.0 * (var >= VAR_FLOOR)).unsqueeze(-1)
        czsq, dczsq = x.new_zeros(b), x.new_zeros(b, d)
        if self.Z is not None:
            assert self.Wz is not None and self.zweights is not None
            CZ = self._kernel(self.Z, x) - self.Wz.transpose(1, 2) @ WR  # b x z x c
            if UR is not None:
                CZ = CZ - self.Uz.transpose(1, 2) @ UR
            z = ((CZ * CZ[..., :1]) * self.zweights.unsqueeze(-1)).sum(1) / self.nz_total
            czsq, dczsq = z[:, 0], 2.0 * z[:, 1:]
        return self.c + md[:, 0], var.clamp_min(VAR_FLOOR), czsq, md[:, 1:], dvar, dczsq

    def at(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(mean, var, czsq or None)`` at ``x`` (``b x d``, point ``j`` on model ``j``);
        differentiable in ``x``."""
        if x.requires_grad and torch.is_grad_enabled():
            mean, var, czsq = StatsAt.apply(x, self)
        else:
            mean, var, czsq = self.stats_with_jacobian(x)[:3]
        return mean, var, (None if self.Z is None else czsq)

