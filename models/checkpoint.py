"""Checkpoints that carry everything needed to rebuild and judge a net.

A checkpoint is a ``torch.save`` dict:

    name        registry name ("superres", "tagger")
    config      the net's XConfig as a dict (rebuilds the architecture)
    state_dict  the weights
    seed        the training seed
    generator   {"version": GENERATOR_VERSION, "config": SynthConfig dict} of the training data
    train       how it was trained (epochs, steps, batch, lr, threads, seconds, final loss)
    metrics     what ``beamsteer models eval`` measured on the held-out set (may be empty)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FORMAT_VERSION = 1


def _plain(v: Any) -> Any:
    """Python builtins only, so ``torch.load(weights_only=True)`` can read the file."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(_plain(x) for x in v) if type(v) in (list, tuple) else tuple(map(_plain, v))
    if isinstance(v, torch.Tensor) or v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, str):  # e.g. torch.__version__ is a str subclass
        return str(v)
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint dict (see module doc), creating the folder."""
    missing = {"name", "config", "state_dict", "seed", "generator"} - set(payload)
    if missing:
        raise ValueError(f"checkpoint lacks {sorted(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_plain({"format": FORMAT_VERSION, **payload}), path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU (plain tensors and python values only)."""
    ckpt: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=True)
    if ckpt.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown checkpoint format {ckpt.get('format')!r}")
    return ckpt


def default_path(name: str) -> Path:
    """Where the shipped weights of a net live."""
    return WEIGHTS_DIR / f"{name}.pt"
