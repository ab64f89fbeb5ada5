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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint dict (see module doc), creating the folder."""
    missing = {"name", "config", "state_dict", "seed", "generator"} - set(payload)
    if missing:
        raise ValueError(f"checkpoint lacks {sorted(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT_VERSION, **payload}, path)
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
