"""Acquisition functions on a (fantasy-conditioned) exact posterior, in model space.

Larger is better for all of them. They are evaluated two ways: in bulk on the candidate set
held by :class:`~server.steering.gp.Fantasies`, and differentiably at arbitrary points for
the gradient polish. Values are in standardized units; :meth:`Scorer.to_output_units`
converts what is reported.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from server.steering.gp import ExactGP, Fantasies, nearest_points

if TYPE_CHECKING:
    from server.steering.local import TiledFantasies
from server.steering.spec import Acquisition, ExperimentSpec, Goal

_C1 = 0.5 * math.log(2 * math.pi)
_C2 = 0.5 * math.log(math.pi / 2)
_ASYMPTOTIC_Z = -1e6  # below this, log h(z) ~ log phi(z) - 2 log|z| to double precision
GRADIENT_SHARE = 0.5  # share of gradient_variance's weight that follows the mean's gradient
GRADIENT_POWER = 1.0
# share of misfit_variance's weight that follows the local error; 0.5 was better than 0.8 on
# the validation maps (benchmarks/tune_map.py) with the noise known and learned
MISFIT_SHARE = 0.5
MISFIT_POWER = 1.0  # exponent of the local error in misfit_variance's weights
# the integrated variances: they need integration points next to the candidates
INTEGRATED = ("integrated_variance", "gradient_variance", "misfit_variance")


def effective_acquisition(spec: ExperimentSpec) -> str:
    """The acquisition actually used: ``ucb``/``ei`` with goal ``map`` fall back to variance."""
    acq = Acquisition(spec.acquisition)
    if spec.goal == Goal.map and acq in (Acquisition.ucb, Acquisition.ei):
        return Acquisition.variance.value
    return acq.value


def gradient_weights(gp: ExactGP, Z: Tensor, share: float = GRADIENT_SHARE,
                     power: float = GRADIENT_POWER) -> Tensor:
    """Weights of the integration points for ``gradient_variance``, mean 1.

    ``w(z) = (1 - share) + share * g(z)^power / mean(g^power)``, where ``g`` is the norm of
    the posterior mean's gradient in lengthscale units (how much the mean changes over one
    lengthscale): large at boundaries and hot spots, small on plateaus. The uniform part
    keeps the design covering the whole domain.

    Args:
        gp: The exact posterior.
        Z: ``Nz x d`` normalized integration points.
        share: Share of the weight that follows the gradient (0: integrated variance).
        power: Exponent of the gradient norm.
    """
    g = (gp.mean_gradient(Z) * gp.lengthscale).norm(dim=-1).pow(power)
    scale = float(g.mean())
    if not math.isfinite(scale) or scale <= 1e-12:
        return torch.ones_like(g)
    return (1.0 - share) + share * g / scale


def misfit_weights(gp: ExactGP, Z: Tensor, share: float | None = None,
                   mean: Tensor | None = None, nearest: Tensor | None = None) -> Tensor:
    """Weights of the integration points for ``misfit_variance``, mean 1.

    The local error estimate of EIGF (Lam 2008): ``e(z) = (mean(z) - y(x_nn(z)))^2``, the
    squared difference between the posterior mean at ``z`` and the measurement nearest to
    ``z`` (in lengthscale units). It is large where the map changes between a place and its
    nearest measurement (boundaries, hot spots) and stays informative when the learned noise
    is too high and flattens the mean, because it compares with the measured values.
    ``w(z) = (1 - share) + share * e(z) / mean(e)``: the uniform part keeps the design
    covering the whole domain.

    Args:
        gp: The exact posterior.
        Z: ``Nz x d`` normalized integration points.
        share: Share of the weight that follows the local error (0: integrated variance).
        mean: Posterior mean at ``Z`` if known (``Nz``), standardized.
        nearest: Index of the training point nearest to each ``z`` if known (``Nz``;
            :attr:`~server.steering.gp.PointCache.nearest` keeps it up to date).
    """
    share = MISFIT_SHARE if share is None else share
    if mean is None:
        mean = gp.predict(Z)[0]
    if nearest is None:
        nearest = nearest_points(Z, gp.X, gp.lengthscale)[0]
    e = (mean - gp.y[nearest]).pow(2 * MISFIT_POWER)
    scale = float(e.mean())
    if not math.isfinite(scale) or scale <= 1e-12:
        return torch.ones_like(e)
    return (1.0 - share) + share * e / scale


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 - exp(a))`` for ``a < 0``, stable on both sides of ``-log 2``."""
    a = a.clamp_max(-1e-300)
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def log_h(z: Tensor) -> Tensor:
    """``log(phi(z) + z Phi(z))``, the log of the standardized expected improvement.

    Stable for very negative ``z`` (via the scaled complementary error function), with finite
    gradients everywhere (each branch sees clamped inputs).

    Args:
        z: Any shape.
    """
    zu = z.clamp_min(-1.0)
    upper = torch.log(torch.exp(-0.5 * zu**2 - _C1) + zu * torch.special.ndtr(zu))
    zl = z.clamp(_ASYMPTOTIC_Z, -1.0)
    lower = -0.5 * zl**2 - _C1 + _log1mexp(
        torch.log(-zl) + torch.log(torch.special.erfcx(-zl / math.sqrt(2))) + _C2)
    za = z.clamp_max(_ASYMPTOTIC_Z)
    asym = -0.5 * za**2 - _C1 - 2 * torch.log(-za)
    return torch.where(z > -1.0, upper, torch.where(z > _ASYMPTOTIC_Z, lower, asym))


class Scorer:
    """One acquisition function bound to a :class:`Fantasies` state.

    Args:
        kind: ``variance``, ``integrated_variance``, ``gradient_variance`` (integrated
            variance with weighted integration points, see :func:`gradient_weights`),
            ``ucb`` or ``ei``.
        fantasies: Posterior at the candidates (and integration points for the integrated
            variances), conditioned on pending/chosen points.
        maximize: Direction for ``ucb``/``ei`` (``False``: minimize).
        beta: ``ucb`` exploration weight.
        best: Best posterior mean at measured points (``ei``), standardized.
        noise: Noise variance of a new observation, standardized.
    """

    def __init__(self, kind: str, fantasies: Fantasies | TiledFantasies, *, maximize: bool = True,
                 beta: float = 4.0, best: float = 0.0, noise: float = 0.0) -> None:
        self.kind, self.f, self.noise = kind, fantasies, noise
        self.sign = 1.0 if maximize else -1.0
        self.sqrt_beta = math.sqrt(beta)
        self.best = self.sign * best  # in sign space: larger is better

    def believe(self, mean: float) -> None:
        """Kriging believer: a fantasy at posterior mean ``mean`` may raise the incumbent."""
        self.best = max(self.best, self.sign * mean)

    def rebind(self, fantasies: Fantasies | TiledFantasies) -> Scorer:
        """The same acquisition (incumbent included) on another fantasy state."""
        other = copy.copy(self)
        other.f = fantasies
        return other

    def _value(self, mean: Tensor, var: Tensor, czsq: Tensor | None) -> Tensor:
        std = var.sqrt()
        if self.kind == "variance":
            return std
        if self.kind == "ucb":
            return self.sign * mean + self.sqrt_beta * std
        if self.kind == "ei":
            return log_h((self.sign * mean - self.best) / std) + torch.log(std)
        if self.kind in INTEGRATED:
            assert czsq is not None
            return czsq / (var + self.noise)
        raise ValueError(f"unknown acquisition {self.kind!r}")

    def candidates(self) -> Tensor:
        """Values ``M`` on the candidate set of the fantasy state."""
        return self._value(*self.f.candidate_stats())

    def at(self, x: Tensor) -> Tensor:
        """Values at ``x`` (``b x d``, normalized), differentiable in ``x``."""
        return self._value(*self.f.at(x))

    def to_output_units(self, value: float, y_mean: float, y_std: float) -> float:
        """Convert a standardized value to the output's units (as reported in candidates)."""
        if self.kind == "variance":
            return value * y_std
        if self.kind == "ucb":
            return value * y_std + self.sign * y_mean
        if self.kind == "ei":
            return value + math.log(y_std)
        return value * y_std**2
