"""Image-quality metrics for super-resolution, on log intensities over valid pixels.

Scattering images span decades, so PSNR and SSIM compare log1p(counts), the way a
scientist looks at them, with the truth's dynamic range over the valid pixels as the
data range. The I(q) error compares azimuthal averages, which is what gets fitted.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def _logs(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.log1p(np.maximum(pred, 0.0)), np.log1p(np.maximum(truth, 0.0))


def psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB of log1p(pred) vs log1p(truth) over mask (H x W each)."""
    p, t = _logs(pred, truth)
    rng = float(t[mask].max() - t[mask].min()) or 1.0
    mse = float(np.mean((p[mask] - t[mask]) ** 2))
    return 10.0 * np.log10(rng**2 / max(mse, 1e-20))


def ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window) of log images over mask.

    Masked pixels of the prediction are replaced by the truth before filtering, so
    the beamstop does not count either way.
    """
    p, t = _logs(pred, truth)
    p = np.where(mask, p, t)
    rng = float(t[mask].max() - t[mask].min()) or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    mu_p, mu_t = gaussian_filter(p, sigma), gaussian_filter(t, sigma)
    var_p = gaussian_filter(p * p, sigma) - mu_p**2
    var_t = gaussian_filter(t * t, sigma) - mu_t**2
    cov = gaussian_filter(p * t, sigma) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    s = num / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return float(s[mask].mean())


def azimuthal_average(
    img: np.ndarray, mask: np.ndarray, center: tuple[float, float], n_bins: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """I(r) averaged over azimuth in n_bins equal radius bins (r in pixels).

    Returns:
        (bin centres, mean intensity per bin); bins with fewer than 4 pixels are NaN.
    """
    rows, cols = np.indices(img.shape)
    r = np.hypot(rows + 0.5 - center[0], cols + 0.5 - center[1])
    edges = np.linspace(r[mask].min(), r[mask].max(), n_bins + 1)
    idx = np.clip(np.digitize(r[mask], edges) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sums = np.bincount(idx, weights=img[mask], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(counts >= 4, sums / counts, np.nan)
    return 0.5 * (edges[1:] + edges[:-1]), prof


def iq_error(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray,
             center: tuple[float, float]) -> float:
    """Mean relative error |I_pred(q) - I_true(q)| / I_true(q) of the azimuthal averages."""
    _, ip = azimuthal_average(pred, mask, center)
    _, it = azimuthal_average(truth, mask, center)
    ok = np.isfinite(it) & (it > 0)
    return float(np.mean(np.abs(ip[ok] - it[ok]) / it[ok]))
