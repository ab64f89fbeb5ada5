"""Multi-label metrics: average precision, F1 and expected calibration error."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score


def per_tag(probs: np.ndarray, labels: np.ndarray, tags: tuple[str, ...]) -> dict[str, dict]:
    """AP, F1 at 0.5 and the positives count per tag (AP is NaN for a tag never present)."""
    out = {}
    for k, t in enumerate(tags):
        y, p = labels[:, k], probs[:, k]
        ap = float(average_precision_score(y, p)) if y.any() else float("nan")
        f1 = float(f1_score(y, p >= 0.5, zero_division=0.0))
        out[t] = {"ap": ap, "f1": f1, "positives": int(y.sum())}
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE over all (image, tag) probabilities pooled, equal-width bins."""
    p, y = probs.ravel(), labels.ravel()
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(ece)


def summary(probs: np.ndarray, labels: np.ndarray, tags: tuple[str, ...]) -> dict:
    tag_m = per_tag(probs, labels, tags)
    aps = [m["ap"] for m in tag_m.values() if np.isfinite(m["ap"])]
    return {"map": float(np.mean(aps)), "ece": expected_calibration_error(probs, labels),
            "macro_f1": float(np.mean([m["f1"] for m in tag_m.values()])), "tags": tag_m}
