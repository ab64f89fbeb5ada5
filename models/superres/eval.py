"""Held-out evaluation of the super-resolution net against bicubic interpolation.

The held-out images come from seeds >= ``HELDOUT_SEED0`` and particle shapes that
the training never saw. Bicubic is the low-resolution counts divided by factor^2
and upsampled with torch's bicubic interpolation (clamped at 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.superres import data, metrics
from models.superres.net import SuperResNet


def bicubic(lr: np.ndarray, factor: int) -> np.ndarray:
    """n x h x w counts -> n x h*f x w*f counts per HR pixel, bicubic."""
    x = torch.from_numpy(lr.astype(np.float32))[:, None] / factor**2
    up = F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
    return up.clamp_min(0.0)[:, 0].numpy()


@torch.no_grad()
def predict(net: SuperResNet, lr: np.ndarray, factor: int, batch: int = 16) -> np.ndarray:
    """n x h x w counts -> n x h*f x w*f predicted counts per HR pixel."""
    dev = next(net.parameters()).device
    out = []
    for i in range(0, len(lr), batch):
        x = torch.from_numpy(lr[i : i + batch].astype(np.float32))[:, None].to(dev)
        out.append(net(x, factor)[:, 0].cpu().numpy())
    return np.concatenate(out)


def _scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, centers: np.ndarray) -> dict:
    p = [metrics.psnr(a, b, m) for a, b, m in zip(pred, truth, mask, strict=True)]
    s = [metrics.ssim(a, b, m) for a, b, m in zip(pred, truth, mask, strict=True)]
    e = [metrics.iq_error(a, b, m, tuple(c))
         for a, b, m, c in zip(pred, truth, mask, centers, strict=True)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "iq_rel_error": float(np.mean(e))}


def evaluate(net: SuperResNet, n: int = 100, seed0: int = data.HELDOUT_SEED0) -> dict[str, Any]:
    """PSNR/SSIM/I(q) error of the net and of bicubic per factor on n held-out images.

    Returns:
        {"n": n, "x2": {"cnn": {...}, "bicubic": {...}, "psnr_gain_db": ..,
        "iq_error_reduction": ..}, "x4": ...}; iq_error_reduction = 1 - cnn / bicubic.
    """
    net.eval()
    out: dict[str, Any] = {"n": n, "heldout_seed0": seed0, "heldout_shapes": data.HELDOUT_SHAPES}
    for f in net.config.factors:
        lr, truth, mask, centers = data.heldout_pairs(n, f, seed0)
        cnn = _scores(predict(net, lr, f), truth, mask, centers)
        bic = _scores(bicubic(lr, f), truth, mask, centers)
        out[f"x{f}"] = {
            "cnn": cnn,
            "bicubic": bic,
            "psnr_gain_db": cnn["psnr"] - bic["psnr"],
            "iq_error_reduction": 1.0 - cnn["iq_rel_error"] / max(bic["iq_rel_error"], 1e-12),
        }
    return out


GOALS = {2: 2.0, 4: 3.0}  # dB over bicubic, from the issue


def format_table(m: dict[str, Any]) -> str:
    """The metrics as a plain-text table with the issue's goals."""
    lines = [f"super-resolution, {m['n']} held-out images per factor "
             f"(shapes {', '.join(m['heldout_shapes'])})",
             f"{'factor':>6} {'method':>8} {'PSNR dB':>8} {'SSIM':>6} {'I(q) err':>9}"]
    for key in sorted(k for k in m if k.startswith("x")):
        r = m[key]
        for meth in ("cnn", "bicubic"):
            s = r[meth]
            lines.append(f"{key:>6} {meth:>8} {s['psnr']:8.2f} {s['ssim']:6.3f} "
                         f"{100 * s['iq_rel_error']:8.2f}%")
        f = int(key[1:])
        ok_p = r["psnr_gain_db"] >= GOALS.get(f, 0)
        ok_q = r["iq_error_reduction"] >= 0.30
        lines.append(f"{key:>6} gain {r['psnr_gain_db']:+.2f} dB (goal >= {GOALS.get(f, 0)} dB: "
                     f"{'met' if ok_p else 'NOT met'}), I(q) error "
                     f"{-100 * r['iq_error_reduction']:+.1f}% (goal <= -30%: "
                     f"{'met' if ok_q else 'NOT met'})")
    return "\n".join(lines)


def figure(net: SuperResNet, path: str | Path, n_examples: int = 3,
           seed0: int = data.HELDOUT_SEED0) -> Path:
    """PNG of input, bicubic, CNN and truth (log scale) and their I(q) for a few examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = max(net.config.factors)
    lr, truth, mask, centers = data.heldout_pairs(n_examples, f, seed0)
    cnn, bic = predict(net, lr, f), bicubic(lr, f)
    fig, axs = plt.subplots(n_examples, 5, figsize=(16, 3.3 * n_examples), squeeze=False)
    for i in range(n_examples):
        vmax = np.log1p(truth[i].max())
        panels = [(lr[i] / f**2, f"input x{f} binned"), (bic[i], "bicubic"), (cnn[i], "CNN"),
                  (truth[i], "truth")]
        for ax, (img, title) in zip(axs[i], panels, strict=False):
            ax.imshow(np.log1p(np.maximum(img, 0)), vmin=0, vmax=vmax, cmap="magma")
            ax.set_title(title)
            ax.axis("off")
        ax = axs[i, 4]
        for img, lab in ((truth[i], "truth"), (bic[i], "bicubic"), (cnn[i], "CNN")):
            r, prof = metrics.azimuthal_average(img, mask[i], tuple(centers[i]))
            ax.loglog(r, prof, label=lab)
        ax.set_xlabel("r (HR pixels)")
        ax.set_ylabel("I (counts / pixel)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
