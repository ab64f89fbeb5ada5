"""Large-N posterior: exact GPs on overlapping tiles of the domain (domain decomposition).

Above a few thousand points the exact GP stops fitting the budget of an ask or an ingest:
at N=20,000 its Cholesky factor is 3.2 GB, a build is O(N^3) and every solve streams the
whole factor from memory. :class:`TiledGP` splits the unit cube into boxes (a k-d tree on the
data, each leaf holding at most ``leaf`` points) and fits one exact GP per box on the points
in the box *and* its surroundings: the ``cap`` points nearest to the box (in lengthscale
units, at most ``max_margin`` lengthscales away). A query is answered by the tile whose
box holds it. Since the posterior at a point is determined by the data near it (the
screening effect of Matern and RBF kernels, stronger the denser the data), the tile's
posterior equals the global one to within a small error; :meth:`TiledGP.check` measures it
against an exact GP on a larger neighbourhood, and the engine only uses tiles that pass.

Costs at N=20,000 in 2-D (``leaf`` 1000, ``cap`` 2500): ~30 tiles of 2500 points, 1.5 GB
of factors, a build of ~30 small Cholesky factorizations, an ingest extends the 2-4 tiles
whose surroundings hold the new point (O(cap^2) each), and every query solves against one
2500 x 2500 factor instead of the 20,000 x 20,000 one.

Everything is immutable like :class:`~server.steering.gp.ExactGP`: an ingest returns a new
:class:`TiledGP` sharing the untouched tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from server.steering.gp import DTYPE, ExactGP, Fantasies, Hyperparameters

LEAF = 1000  # most points whose box is a tile's own
CAP = 2500  # most points a tile is fitted on (its own and the nearest around its box)
MAX_MARGIN = 4.0  # a tile never reaches further than this (lengthscale units)
CHECK_POINTS = 256  # test points of the accuracy check
CHECK_REFERENCE = 5000  # most points of the check's reference exact GP
CHECK_TOLERANCE = 0.3  # tile mean error / posterior std allowed by the check


def _box_distance(U: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  ls: np.ndarray) -> np.ndarray:
    """Distance (lengthscale units) from each row of ``U`` to the box ``[lo, hi]``."""
    gap = np.maximum(np.maximum(lo - U, U - hi), 0.0) / ls
    return np.sqrt((gap * gap).sum(1))


def kd_boxes(U: np.ndarray, leaf: int, ls: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes covering the unit cube, each holding at most ``leaf`` rows of ``U``.

    Splits at the median of the axis that is longest in lengthscale units, so tiles are
    roughly isotropic in the kernel's metric and follow the density of the data.
    """
    d = U.shape[1]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    stack = [(np.zeros(d), np.ones(d), np.arange(len(U)))]
    while stack:
        lo, hi, idx = stack.pop()
        if len(idx) <= leaf:
            out.append((lo, hi))
            continue
        j = int(np.argmax((hi - lo) / ls))
        s = float(np.median(U[idx, j]))
        if not lo[j] < s < hi[j]:  # all on one value: split the box in the middle
            s = 0.5 * (lo[j] + hi[j])
        left = U[idx, j] <= s
        if left.all() or not left.any():  # duplicates everywhere: stop splitting here
            out.append((lo, hi))
            continue
        hl, lr = hi.copy(), lo.copy()
        hl[j], lr[j] = s, s
        stack.append((lr, hi, idx[~left]))
        stack.append((lo, hl, idx[left]))
    return out


@dataclass(frozen=True)
class Layout:
    """Where the tiles are: boxes ``T x d`` (``lo``, ``hi``) and reach ``radius`` (``T``,
    lengthscale units) of each."""

    lo: np.ndarray
    hi: np.ndarray
    radius: np.ndarray

    def assign(self, U: np.ndarray) -> np.ndarray:
        """Index of the box holding each row of ``U`` (the first one on shared faces; the
        nearest box for rows outside the unit cube)."""
        U = np.asarray(U, dtype=np.float64).reshape(-1, self.lo.shape[1])
        out = np.empty(len(U), dtype=np.int64)
        for s in range(0, len(U), 8192):
            B = U[s:s + 8192, None, :]
            inside = ((B >= self.lo - 1e-12) & (B <= self.hi + 1e-12)).all(-1)
            idx = inside.argmax(1)
            none = ~inside.any(1)
            if none.any():
                gap = np.maximum(np.maximum(self.lo - B[none], B[none] - self.hi), 0.0)
                idx[none] = (gap * gap).sum(-1).argmin(1)
            out[s:s + 8192] = idx
        return out

    def reaches(self, t: int, U: np.ndarray, ls: np.ndarray,
                owner: np.ndarray | None = None) -> np.ndarray:
        """Which rows of ``U`` tile ``t`` is fitted on: those within its reach, and those
        its box is nearest to (points outside the unit cube that no tile reaches).

        Args:
            t: Tile.
            U: ``n x d`` normalized points.
            ls: Lengthscales.
            owner: :meth:`assign` of ``U``, if already known.
        """
        owner = self.assign(U) if owner is None else owner
        return (_box_distance(U, self.lo[t], self.hi[t], ls) <= self.radius[t]) | (owner == t)


class TiledGP:
    """Posterior of one output from exact GPs on overlapping tiles; immutable.

    Args:
        hp: Hyperparameters.
        X: ``n x d`` normalized inputs (all of them).
        y: ``n`` standardized outputs.
        noise: ``n`` noise variances.
        layout: The tiles' boxes and reach.
        members: Row indices (into ``X``) each tile is fitted on.
        gps: Each tile's exact GP (on ``X[members[t]]``), with a point cache at the
            candidates in its box and the integration points it reaches, when ``points``.
        points: ``(P, M)`` as for :meth:`ExactGP.build`, or ``None``.
        check_error: Result of :meth:`check` when built (``None``: not checked).
    """

    def __init__(self, hp: Hyperparameters, X: Tensor, y: Tensor, noise: Tensor,
                 layout: Layout, members: tuple[np.ndarray, ...], gps: tuple[ExactGP, ...],
                 points: tuple[Tensor, int] | None, check_error: float | None = None) -> None:
        self.hp, self.X, self.y, self.noise = hp, X, y, noise
        self.layout, self.members, self.gps, self.points = layout, members, gps, points
        self.check_error = check_error
        self.lengthscale = torch.as_tensor(hp.lengthscale, dtype=DTYPE)
        self._ls = np.asarray(hp.lengthscale, dtype=np.float64)

    @property
    def n(self) -> int:
        """Number of training points."""
        return self.X.shape[0]

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.gps)

    # --- building ------------------------------------------------------------------------

    @classmethod
    def build(cls, hp: Hyperparameters, X: Tensor, y: Tensor, noise: Tensor,
              points: tuple[Tensor, int] | None = None, *, leaf: int = LEAF, cap: int = CAP,
              layout: Layout | None = None) -> TiledGP:
        """Partition and fit every tile.

        Args:
            hp: Hyperparameters.
            X: ``n x d`` normalized inputs.
            y: ``n`` standardized outputs.
            noise: ``n`` noise variances.
            points: ``(P, M)``: candidates and integration points to cache the posterior at.
            leaf: Most points whose box is a tile's own.
            cap: Most points a tile is fitted on.
            layout: Reuse these tiles (boxes and reach) instead of partitioning anew.

        Raises:
            torch.linalg.LinAlgError: If a tile's covariance cannot be factored.
        """
        U = X.numpy()
        ls = np.asarray(hp.lengthscale, dtype=np.float64)
        if layout is None:
            boxes = kd_boxes(U, leaf, ls)
            lo, hi = np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes])
            radius = np.empty(len(boxes))
            for t in range(len(boxes)):
                dist = _box_distance(U, lo[t], hi[t], ls)
                k = min(cap, len(U))
                radius[t] = min(MAX_MARGIN, float(np.partition(dist, k - 1)[k - 1]))
            layout = Layout(lo, hi, radius)
        members, gps = [], []
        owner = layout.assign(U)
        for t in range(len(layout.radius)):
            rows = np.flatnonzero(layout.reaches(t, U, ls, owner))
            members.append(rows)
            gps.append(ExactGP.build(hp, X[rows], y[rows], noise[rows],
                                     cls._tile_points(layout, t, points, ls)))
        return cls(hp, X, y, noise, layout, tuple(members), tuple(gps), points)

    @staticmethod
    def factor_bytes(X: Tensor, hp: Hyperparameters, leaf: int, cap: int) -> int:
        """Bytes of the Cholesky factors :meth:`build` would keep with ``leaf`` and ``cap``."""
        tiles = len(kd_boxes(X.numpy(), leaf, np.asarray(hp.lengthscale, dtype=np.float64)))
        return tiles * min(cap, X.shape[0]) ** 2 * 8

    @staticmethod
    def _tile_points(layout: Layout, t: int, points: tuple[Tensor, int] | None,
                     ls: np.ndarray) -> tuple[Tensor, int] | None:
        """Tile ``t``'s share of the cached points: candidates in its box, integration
        points within its reach."""
        if points is None:
            return None
        P, M = points
        Pn = P.numpy()
        own = np.flatnonzero(layout.assign(Pn[:M]) == t)
        z = M + np.flatnonzero(layout.reaches(t, Pn[M:], ls))
        return P[np.concatenate([own, z])], len(own)

    def extend(self, X: Tensor, y: Tensor, noise: Tensor) -> TiledGP:
        """With ``k`` more points: each tile that reaches one of them is extended
        incrementally (O(cap^2 k)); the others are shared."""
        n0 = self.n
        U = X.numpy()
        members, gps = list(self.members), list(self.gps)
        owner = self.layout.assign(U)
        for t in range(self.n_tiles):
            mask = self.layout.reaches(t, U, self._ls, owner)
            if mask.any():
                idx = np.flatnonzero(mask)
                gps[t] = gps[t].extend(X[idx], y[idx], noise[idx])
                members[t] = np.concatenate([members[t], n0 + idx])
        return TiledGP(self.hp, torch.cat([self.X, X]), torch.cat([self.y, y]),
                       torch.cat([self.noise, noise]), self.layout, tuple(members),
                       tuple(gps), self.points, self.check_error)

    # --- the accuracy check --------------------------------------------------------------

    def check(self, seed: int = 0) -> float:
        """Error of the tiles against an exact GP on a larger neighbourhood.

        On the tile that reaches least far (in lengthscale units: where the truncation is
        most aggressive), compares the posterior mean at :data:`CHECK_POINTS` random points
        of its box with that of an exact GP on up to :data:`CHECK_REFERENCE` points nearest
        to the box (twice the tile's reach, at least), and returns the RMS difference over the
        reference's RMS posterior std. The expected squared error of a calibrated posterior
        mean is its variance, so an independent extra error of ``e`` posterior stds inflates
        the RMSE against the truth by ``sqrt(1 + e^2) - 1``: 4.4% at ``e = 0.3``.
        """
        t = int(np.argmin(self.layout.radius))
        U = self.X.numpy()
        dist = _box_distance(U, self.layout.lo[t], self.layout.hi[t], self._ls)
        k = min(len(U), max(CHECK_REFERENCE, 2 * len(self.members[t])))
        rows = np.argpartition(dist, k - 1)[:k] if k < len(U) else np.arange(len(U))
        if len(rows) <= len(self.members[t]):
            return 0.0  # the tile already holds everything the reference would
        ref = ExactGP.build(self.hp, self.X[rows], self.y[rows], self.noise[rows])
        rng = np.random.default_rng(seed)
        lo, hi = self.layout.lo[t], self.layout.hi[t]
        T = torch.as_tensor(lo + rng.random((CHECK_POINTS, len(lo))) * (hi - lo), dtype=DTYPE)
        with torch.no_grad():
            m_tile, _ = self.gps[t].predict(T)
            m_ref, v_ref = ref.predict(T)
        err = float((m_tile - m_ref).pow(2).mean().sqrt())
        return err / max(float(v_ref.mean().sqrt()), 1e-12)

    def checked(self, seed: int = 0) -> TiledGP:
        """This posterior with :attr:`check_error` set (by :meth:`check`)."""
        return TiledGP(self.hp, self.X, self.y, self.noise, self.layout, self.members,
                       self.gps, self.points, self.check(seed))

    # --- queries -------------------------------------------------------------------------

    def _groups(self, U: np.ndarray) -> list[tuple[int, np.ndarray]]:
        owner = self.layout.assign(U)
        return [(int(t), np.flatnonzero(owner == t)) for t in np.unique(owner)]

    def predict(self, Xq: Tensor) -> tuple[Tensor, Tensor]:
        """Latent posterior mean and variance at ``Xq`` (``q x d``), from each point's tile."""
        mean = Xq.new_empty(Xq.shape[0])
        var = Xq.new_empty(Xq.shape[0])
        for t, idx in self._groups(Xq.detach().numpy()):
            m, v = self.gps[t].predict(Xq[idx])
            mean[idx], var[idx] = m, v
        return mean, var

    def mean_at_train(self) -> Tensor:
        """Posterior mean at the training inputs, each from the tile whose box holds it."""
        out = self.y.new_empty(self.n)
        owner = self.layout.assign(self.X.numpy())
        for t, gp in enumerate(self.gps):
            own = owner[self.members[t]] == t
            if own.any():
                out[self.members[t][own]] = gp.mean_at_train()[torch.as_tensor(own)]
        return out

    def fantasies(self, noise: float) -> TiledFantasies:
        """A fresh fantasy state over every tile's cached candidates."""
        return TiledFantasies(self, noise)


class TiledFantasies:
    """:class:`~server.steering.gp.Fantasies` of a :class:`TiledGP`: one per tile, over the
    tile's own candidates; a fantasy conditions every tile that reaches it.

    Exposes what the acquisition and the selection use: ``C`` (all candidates, tile by
    tile), ``mean`` and ``var0`` there, ``Z``, ``nz_total``, ``noise``, ``Xf``, ``gp`` (the
    tiled posterior: ``X``, ``y``, ``noise``, ``hp``, ``lengthscale``, ``n``), and the
    methods :meth:`candidate_stats`, :meth:`at`, :meth:`unconditioned`, :meth:`condition`.
    """

    def __init__(self, gp: TiledGP, noise: float) -> None:
        if gp.points is None:
            raise ValueError("the tiled posterior has no point cache")
        P, M = gp.points
        self.gp, self.noise = gp, noise
        self.Z = P[M:] if P.shape[0] > M else None
        self.nz_total = max(P.shape[0] - M, 1)
        self.weights = None  # integration points are weighted equally over tiles
        self.tiles = [Fantasies.from_cache(g, noise, nz_total=self.nz_total) for g in gp.gps]
        self.C = torch.cat([f.C for f in self.tiles])
        self.mean = torch.cat([f.mean[: f.M] for f in self.tiles])
        self.var0 = torch.cat([f.var0[: f.M] for f in self.tiles])
        self.Xf = P.new_zeros(0, P.shape[1])

    @property
    def n_fantasies(self) -> int:
        """Number of fantasies conditioned on."""
        return self.Xf.shape[0]

    def _czsq(self, f: Fantasies, czsq: Tensor | None, b: int) -> Tensor | None:
        if self.Z is None:
            return None
        return czsq if czsq is not None else self.C.new_zeros(b)  # reaches no Z point

    def candidate_stats(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(mean, var, czsq)`` on all candidates (see :meth:`Fantasies.candidate_stats`)."""
        stats = [f.candidate_stats() for f in self.tiles]
        czsq = None
        if self.Z is not None:
            czsq = torch.cat([self._czsq(f, s[2], f.M) for f, s in  # type: ignore[misc]
                              zip(self.tiles, stats, strict=True)])
        return (torch.cat([s[0] for s in stats]), torch.cat([s[1] for s in stats]), czsq)

    def _by_tile(self, x: Tensor, fn: str) -> list[Tensor | None]:
        """Apply ``fn`` of each point's tile, results back in the order of ``x``."""
        groups = self.gp._groups(x.detach().numpy())
        parts: list[list[Tensor | None]] = []
        order = []
        for t, idx in groups:
            f = self.tiles[t]
            res = list(getattr(f, fn)(x[torch.as_tensor(idx)]))
            if fn == "at":
                res[2] = self._czsq(f, res[2], len(idx))
            parts.append(res)
            order.append(idx)
        inv = torch.as_tensor(np.argsort(np.concatenate(order), kind="stable"))
        out: list[Tensor | None] = []
        for k in range(len(parts[0])):
            if parts[0][k] is None:
                out.append(None)
            else:
                out.append(torch.cat([p[k] for p in parts])[inv])  # type: ignore[misc]
        return out

    def at(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Conditioned posterior at ``x`` (``b x d``), differentiable (see
        :meth:`Fantasies.at`)."""
        mean, var, czsq = self._by_tile(x, "at")
        assert mean is not None and var is not None
        return mean, var, czsq

    def unconditioned(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance at ``x`` without the fantasies."""
        mean, var = self._by_tile(x, "unconditioned")
        assert mean is not None and var is not None
        return mean, var

    def condition(self, x: Tensor) -> float:
        """Condition every tile that reaches ``x`` (shape ``d``); returns the mean there."""
        x = x.reshape(1, -1)
        U = x.numpy()
        owner = self.gp.layout.assign(U)
        own = int(owner[0])
        mean = math.nan
        for t, f in enumerate(self.tiles):
            if self.gp.layout.reaches(t, U, self.gp._ls, owner)[0]:
                m = f.condition(x[0])
                if t == own:
                    mean = m
        self.Xf = torch.cat([self.Xf, x])
        return mean
