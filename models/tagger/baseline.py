"""The simple baseline the tagger must beat: logistic regression on intensity profiles.

Features per image, around the true beam centre (which a beamline knows from its
calibration; the CNN is not told it): the radial profile of log1p(counts) in 32
bins, normalized by its maximum, and the azimuthal profile in 16 sectors of the
mean log1p(counts) over the middle radii, normalized by its mean, plus its std.
One L2-regularized logistic regression per tag (scikit-learn).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from models.synth import SynthImage


def profile_features(im: SynthImage, n_r: int = 32, n_chi: int = 16) -> np.ndarray:
    """Radial + azimuthal profile features of one image (n_r + n_chi + 1 values)."""
    x = im.counts.astype(np.float64)
    valid = np.isfinite(x) & (x >= 0)
    lx = np.log1p(np.where(valid, x, 0.0))
    r = im.detector.radius_map()[valid]
    chi = im.detector.chi_map()[valid]
    v = lx[valid]
    r_edges = np.linspace(r.min(), r.max() + 1e-9, n_r + 1)
    ri = np.clip(np.digitize(r, r_edges) - 1, 0, n_r - 1)
    cnt = np.bincount(ri, minlength=n_r)
    radial = np.bincount(ri, weights=v, minlength=n_r) / np.maximum(cnt, 1)
    radial = radial / max(radial.max(), 1e-9)
    mid = (r > np.quantile(r, 0.2)) & (r < np.quantile(r, 0.8))
    ci = np.clip(((chi[mid] + np.pi) / (2 * np.pi) * n_chi).astype(int), 0, n_chi - 1)
    ccnt = np.bincount(ci, minlength=n_chi)
    az = np.bincount(ci, weights=v[mid], minlength=n_chi) / np.maximum(ccnt, 1)
    az_mean = az[ccnt > 0].mean() if (ccnt > 0).any() else 1.0
    az = np.where(ccnt > 0, az / max(az_mean, 1e-9), 1.0)
    return np.concatenate([radial, az, [az.std()]])


class ProfileBaseline:
    """One logistic regression per tag on standardized profile features."""

    def __init__(self, n_tags: int, c: float = 1.0) -> None:
        self.scaler = StandardScaler()
        self.models = [LogisticRegression(C=c, max_iter=2000) for _ in range(n_tags)]

    def fit(self, feats: np.ndarray, labels: np.ndarray) -> ProfileBaseline:
        z = self.scaler.fit_transform(feats)
        for k, m in enumerate(self.models):
            m.fit(z, labels[:, k])
        return self

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        z = self.scaler.transform(feats)
        return np.stack([m.predict_proba(z)[:, 1] for m in self.models], axis=1)
