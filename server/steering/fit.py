"""Hyperparameter fitting of one output's GP with BoTorch (``SingleTaskGP`` + ``fit_gpytorch_mll``).

The model mirrors BoTorch's default ``SingleTaskGP``: an ARD kernel with a dimension-scaled
LogNormal lengthscale prior and no outputscale (outputs are standardized), a constant mean, and
either a learned Gaussian noise with BoTorch's LogNormal(-4, 1) prior or fixed per-point noise
(``train_Yvar``). Inputs arrive normalized to the unit cube; outputs are standardized here.

The lengthscale prior is BoTorch's (Hvarfner et al. 2024,
``get_covar_module_with_dim_scaled_prior``: median ``exp(sqrt(2)) sqrt(d)``, about 5.8 in 2-D,
log-sd ``sqrt(3)``), unless the caller passes another. A ``map`` experiment's fits use
:data:`MAP_LENGTHSCALE_PRIOR`, which is BoTorch's too: a prior with median 0.5 in 2-D was
about 3% better on the held-out validation films in 2-D, neutral in 3-D and 4-D, and about
1% worse on the benchmark's maps (benchmarks/README.md, "Sixth pass"). It is a knob of
``benchmarks/tune_map.py`` (``fit.MAP_LENGTHSCALE_PRIOR=median/log-sd``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, MaternKernel, RBFKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import LogNormalPrior

from server.steering.errors import FitFailed
from server.steering.gp import NOISE_FLOOR, Hyperparameters

MIN_LENGTHSCALE = 2.5e-2  # BoTorch's constraint on the dim-scaled prior, for stability
MAXITER = 200  # L-BFGS-B iterations; fits converge well before on these small problems


@dataclass(frozen=True)
class LengthscalePrior:
    """A LogNormal prior of each ARD lengthscale (unit-cube units), scaled with the dimension.

    Args:
        median_2d: The prior's median in 2-D; in ``d`` dimensions ``median_2d * sqrt(d / 2)``.
        log_sd: Standard deviation of the log-lengthscale.
    """

    median_2d: float
    log_sd: float

    def __post_init__(self) -> None:
        for name in ("median_2d", "log_sd"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

    def prior(self, d: int) -> LogNormalPrior:
        """The prior in ``d`` dimensions."""
        return LogNormalPrior(loc=math.log(self.median_2d) + 0.5 * math.log(d / 2),
                              scale=self.log_sd)


#: BoTorch's dimension-scaled prior: loc ``sqrt(2) + log(d) / 2``, scale ``sqrt(3)``.
BOTORCH_LENGTHSCALE_PRIOR = LengthscalePrior(math.exp(math.sqrt(2) + 0.5 * math.log(2)),
                                             math.sqrt(3))
#: A ``map`` experiment's prior; tune it on the held-out validation films, not the benchmark's.
MAP_LENGTHSCALE_PRIOR = BOTORCH_LENGTHSCALE_PRIOR


def covar_module(kernel: str, d: int,
                 lengthscale_prior: LengthscalePrior = BOTORCH_LENGTHSCALE_PRIOR) -> Kernel:
    """The ARD kernel with a dimension-scaled LogNormal lengthscale prior.

    Args:
        kernel: ``"matern52"``, ``"matern32"`` or ``"rbf"``.
        d: Input dimension.
        lengthscale_prior: The prior (default BoTorch's); the optimizer starts at its mode.
    """
    prior = lengthscale_prior.prior(d)
    kw = dict(ard_num_dims=d, lengthscale_prior=prior,
              lengthscale_constraint=GreaterThan(MIN_LENGTHSCALE, transform=None,
                                                 initial_value=prior.mode))
    if kernel == "rbf":
        return RBFKernel(**kw)
    nu = {"matern52": 2.5, "matern32": 1.5}[kernel]
    return MaternKernel(nu=nu, **kw)


def standardize(y: np.ndarray) -> tuple[float, float]:
    """Mean and scale used to standardize ``y`` (``n``); scale 1 for fewer than 2 distinct."""
    mean = float(np.mean(y)) if y.size else 0.0
    std = float(np.std(y, ddof=1)) if y.size > 1 else 0.0
    if not math.isfinite(std) or std < 1e-12 * max(1.0, abs(mean)):
        std = 1.0
    return mean, std


def warm_start(model: SingleTaskGP, init: Hyperparameters, y_mean: float, y_std: float, *,
               learned_noise: bool) -> None:
    """Set ``model``'s parameters to ``init``, whose outputs were standardized by
    ``init.y_mean``/``init.y_std``, re-expressed for ``y_mean``/``y_std`` (each value clamped
    into its constraint)."""
    with torch.no_grad():
        ls = np.maximum(np.asarray(init.lengthscale, dtype=np.float64), MIN_LENGTHSCALE * 1.01)
        model.covar_module.lengthscale = torch.as_tensor(ls, dtype=torch.float64).reshape(1, -1)
        raw_mean = init.mean_constant * init.y_std + init.y_mean
        model.mean_module.constant = (raw_mean - y_mean) / y_std
        if learned_noise:
            lower = float(model.likelihood.noise_covar.raw_noise_constraint.lower_bound)
            noise = init.noise * (init.y_std / y_std) ** 2
            model.likelihood.noise = max(noise, lower * 1.01)


def fit_hyperparameters(X: np.ndarray, y: np.ndarray, yvar: np.ndarray | None, kernel: str,
                        *, seed: int = 0, init: Hyperparameters | None = None,
                        maxiter: int = MAXITER,
                        lengthscale_prior: LengthscalePrior = BOTORCH_LENGTHSCALE_PRIOR
                        ) -> Hyperparameters:
    """Fit one output's hyperparameters by maximizing the marginal likelihood.

    Args:
        X: ``n x d`` inputs normalized to the unit cube.
        y: ``n`` outputs in output units.
        yvar: ``n`` known noise variances (output units), or ``None`` to learn the noise.
        kernel: ``"matern52"``, ``"matern32"`` or ``"rbf"``.
        seed: Seeds the random restarts BoTorch draws from the priors after a failed attempt.
        init: Warm start: the optimizer starts from these hyperparameters (converted to this
            fit's standardization) instead of the priors' modes.
        maxiter: Most L-BFGS-B iterations.
        lengthscale_prior: The lengthscales' prior (default BoTorch's).

    Returns:
        The fitted hyperparameters (model space), with ``fitted_n = n``.

    Raises:
        FitFailed: The optimizer failed or produced non-finite values.
    """
    n, d = X.shape
    y_mean, y_std = standardize(y)
    tX = torch.as_tensor(X, dtype=torch.float64)
    tY = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float64).unsqueeze(-1)
    tYvar = None
    if yvar is not None:
        tYvar = torch.as_tensor(np.maximum(yvar / y_std**2, NOISE_FLOOR),
                                dtype=torch.float64).unsqueeze(-1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SingleTaskGP(tX, tY, train_Yvar=tYvar,
                             covar_module=covar_module(kernel, d, lengthscale_prior),
                             outcome_transform=None)
        if init is not None and init.kernel == kernel and len(init.lengthscale) == d:
            warm_start(model, init, y_mean, y_std, learned_noise=tYvar is None)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
    with torch.no_grad():
        lengthscale = model.covar_module.lengthscale.reshape(-1).numpy().copy()
        mean_constant = float(model.mean_module.constant)
        if tYvar is None:
            noise = float(model.likelihood.noise.reshape(-1)[0])
        else:
            noise = float(tYvar.median())
    values = [*lengthscale.tolist(), mean_constant, noise]
    if not all(math.isfinite(v) for v in values) or noise < 0 or (lengthscale <= 0).any():
        raise FitFailed("?", f"non-finite hyperparameters {values}")
    return Hyperparameters(kernel=kernel, lengthscale=lengthscale, noise=noise,
                           mean_constant=mean_constant, y_mean=y_mean, y_std=y_std,
                           noise_model="learned" if yvar is None else "fixed", fitted_n=n)
