"""Load a net by name from its checkpoint alone, and describe its inputs and outputs.

    >>> m = registry.load("tagger", device="cpu")
    >>> m.info.outputs[0].shape, m.info.tags
    >>> probs = m.predict(image)            # H x W counts -> {tag: probability}

The serving layer relies on ``ModelInfo`` (shapes, dtypes, tags, parameters) and on
``LoadedModel.predict``; the architecture is rebuilt from the checkpoint's config,
so shipped weights and retrained ones load the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint import WEIGHTS_DIR, default_path, load_checkpoint
from models.superres.net import SuperResConfig, SuperResNet
from models.tagger.net import TaggerConfig, TaggerNet


@dataclass(frozen=True)
class TensorSpec:
    """One input or output; ``None`` in a shape is a free size."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    description: str


@dataclass(frozen=True)
class ModelInfo:
    """What the serving layer needs to know about a loaded net."""

    name: str
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    generator_version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _superres_info(net: SuperResNet, ckpt: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        name=ckpt["name"],
        task="super-resolution",
        inputs=(TensorSpec("counts", (None, None), "float32",
                           "low-resolution detector counts (any real dtype; NaN/negative = 0)"),),
        outputs=(TensorSpec("counts", ("h*factor", "w*factor"), "float32",
                            "expected counts per high-resolution pixel"),),
        parameters={"factors": list(net.config.factors)},
        seed=ckpt["seed"],
        generator_version=ckpt["generator"]["version"],
        metrics=ckpt.get("metrics", {}),
    )


def _tagger_info(net: TaggerNet, ckpt: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        name=ckpt["name"],
        task="multi-label tagging",
        inputs=(TensorSpec("image", (None, None), "float32",
                           "detector counts, any size and real dtype; NaN/negative = masked"),),
        outputs=(TensorSpec("probabilities", (len(net.config.tags),), "float32",
                            "calibrated probability per tag, in the order of `tags`"),),
        tags=net.config.tags,
        parameters={"preprocessed_size": net.config.size},
        seed=ckpt["seed"],
        generator_version=ckpt["generator"]["version"],
        metrics=ckpt.get("metrics", {}),
    )


# name -> (config class, net class, info builder)
ARCHITECTURES: dict[str, tuple[type, type[nn.Module], Callable[..., ModelInfo]]] = {
    "superres": (SuperResConfig, SuperResNet, _superres_info),
    "tagger": (TaggerConfig, TaggerNet, _tagger_info),
}


@dataclass
class LoadedModel:
    """A net on its device with its description."""

    net: nn.Module
    info: ModelInfo
    device: torch.device
    checkpoint_path: Path

    @torch.no_grad()
    def predict(self, image: np.ndarray, **kwargs: Any) -> Any:
        """Run one image (H x W array).

        superres: ``factor=`` (default the largest) -> H*f x W*f float32 counts.
        tagger: -> {tag: probability}.
        """
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if isinstance(self.net, SuperResNet):
            factor = int(kwargs.get("factor", max(self.net.config.factors)))
            out = self.net(x[None, None].to(self.device), factor)
            return out[0, 0].cpu().numpy()
        if isinstance(self.net, TaggerNet):
            probs = self.net.tag_images([x])[0].cpu().numpy()
            return {t: float(p) for t, p in zip(self.net.config.tags, probs, strict=True)}
        raise TypeError(f"no predict for {type(self.net).__name__}")


def build(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the net of a checkpoint dict and load its weights (on the CPU, eval mode)."""
    name = ckpt["name"]
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown model {name!r}; known: {sorted(ARCHITECTURES)}")
    config_cls, net_cls, _ = ARCHITECTURES[name]
    net = net_cls(config_cls(**_tuples(ckpt["config"])))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def available() -> list[str]:
    """Names of the nets whose weights ship with the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt") if p.stem in ARCHITECTURES)


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a net by registry name (shipped weights) or from a checkpoint path.

    Args:
        name_or_path: "superres", "tagger", or a path to a ``.pt`` checkpoint.
        device: "cpu", "cuda", "cuda:1", ...

    Returns:
        The net in eval mode on ``device`` with its ``ModelInfo``.
    """
    path = Path(name_or_path)
    if str(name_or_path) in ARCHITECTURES:
        path = default_path(str(name_or_path))
    ckpt = load_checkpoint(path)
    dev = torch.device(device)
    net = build(ckpt).to(dev)
    info = ARCHITECTURES[ckpt["name"]][2](net, ckpt)
    return LoadedModel(net, info, dev, path)
