"""Held-out evaluation of the tagger, side by side with the profile baseline.

Two sets: unseen seeds of the training distribution ("heldout") and unseen seeds
under shifted conditions ("shifted": other detector sizes, beam centre, exposure
and particle shapes; see ``data.SHIFTED``). The baseline is fitted on training
images of the same seed as the net.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.synth import SynthImage
from models.tagger import data, metrics
from models.tagger.baseline import ProfileBaseline, profile_features
from models.tagger.net import TaggerNet

GOALS = {"map": 0.95, "ece": 0.05}


@torch.no_grad()
def predict(net: TaggerNet, ims: list[SynthImage], batch: int = 64) -> np.ndarray:
    """Calibrated probabilities, n x n_tags, for raw generated images."""
    net.eval()
    out = []
    for i in range(0, len(ims), batch):
        out.append(net.tag_images([torch.from_numpy(im.counts) for im in ims[i : i + batch]]))
    return torch.cat(out).cpu().numpy()


def baseline_model(seed: int, n: int, tags: tuple[str, ...]) -> ProfileBaseline:
    ims = data.images(data.train_seeds(seed, n), data.TRAIN)
    feats = np.stack([profile_features(im) for im in ims])
    labels = np.stack([im.tag_vector() for im in ims])
    return ProfileBaseline(len(tags)).fit(feats, labels)


def evaluate(
    net: TaggerNet,
    n: int = 300,
    baseline_seed: int | None = 0,
    baseline_n: int = 3000,
    seed_offset: int = 0,
) -> dict[str, Any]:
    """Metrics of the net (and of the baseline unless baseline_seed is None) on both sets.

    ``seed_offset`` moves both held-out sets to other (still unseen) seeds.

    Returns:
        {"n": n, "heldout": {"cnn": summary, "baseline": summary}, "shifted": {...}} where a
        summary is {"map", "ece", "macro_f1", "tags": {tag: {"ap", "f1", "positives"}}}.
    """
    tags = net.config.tags
    base = baseline_model(baseline_seed, baseline_n, tags) if baseline_seed is not None else None
    out: dict[str, Any] = {"n": n, "baseline_train_images": baseline_n if base else 0}
    for name, cfg, seed0 in (("heldout", data.TRAIN, data.HELDOUT_SEED0),
                             ("shifted", data.SHIFTED, data.SHIFTED_SEED0)):
        ims = data.images(range(seed0 + seed_offset, seed0 + seed_offset + n), cfg)
        labels = np.stack([im.tag_vector() for im in ims])
        res = {"cnn": metrics.summary(predict(net, ims), labels, tags)}
        if base is not None:
            feats = np.stack([profile_features(im) for im in ims])
            res["baseline"] = metrics.summary(base.predict_proba(feats), labels, tags)
        out[name] = res
    return out


def format_table(m: dict[str, Any]) -> str:
    """Per-tag AP/F1 and mAP/ECE for the CNN and the baseline on both sets."""
    lines = []
    for name in ("heldout", "shifted"):
        r = m[name]
        meths = [k for k in ("cnn", "baseline") if k in r]
        lines.append(f"tagger, {name} set, {m['n']} images")
        head = f"{'tag':>16} {'pos':>4}"
        head += "".join(f" {k + ' AP':>12} {k + ' F1':>12}" for k in meths)
        lines.append(head)
        for t, tm in r["cnn"]["tags"].items():
            row = f"{t:>16} {tm['positives']:>4}"
            for k in meths:
                row += f" {r[k]['tags'][t]['ap']:12.3f} {r[k]['tags'][t]['f1']:12.3f}"
            lines.append(row)
        for k in meths:
            s = r[k]
            ok_map = "met" if s["map"] >= GOALS["map"] else "NOT met"
            ok_ece = "met" if s["ece"] <= GOALS["ece"] else "NOT met"
            lines.append(f"{k:>16} mAP {s['map']:.3f} (goal >= {GOALS['map']}: {ok_map})  "
                         f"ECE {s['ece']:.3f} (goal <= {GOALS['ece']}: {ok_ece})  "
                         f"macro-F1 {s['macro_f1']:.3f}")
        lines.append("")
    return "\n".join(lines)


def figure(net: TaggerNet, path: str | Path, n: int = 300, n_examples: int = 8) -> Path:
    """PNG: example shifted-set images with true and predicted tags, and per-tag PR curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    tags = net.config.tags
    ims = data.images(range(data.SHIFTED_SEED0, data.SHIFTED_SEED0 + n), data.SHIFTED)
    probs = predict(net, ims)
    labels = np.stack([im.tag_vector() for im in ims])
    fig = plt.figure(figsize=(20, 11))
    for i in range(n_examples):
        ax = fig.add_subplot(3, 6, i + 1)
        c = ims[i].counts
        ax.imshow(np.log1p(np.where(c >= 0, c, 0)), cmap="viridis")
        true = {t for t, v in ims[i].tags.items() if v}
        pred = {t for t, p in zip(tags, probs[i], strict=True) if p >= 0.5}
        ax.set_title("true: " + ",".join(sorted(true)) + "\npred: " + ",".join(sorted(pred)),
                     fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(3, 6, (n_examples + 1, 18))
    for k, t in enumerate(tags):
        if labels[:, k].any():
            p, r, _ = precision_recall_curve(labels[:, k], probs[:, k])
            ax.plot(r, p, label=t)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"per-tag precision-recall, shifted set ({n} images)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path
