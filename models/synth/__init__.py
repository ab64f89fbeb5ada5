"""Synthetic small-angle scattering detector images with labels."""

from models.synth.generator import GAP_VALUE, GENERATOR_VERSION, SynthConfig, SynthImage, generate
from models.synth.geometry import Detector
from models.synth.tags import TAG_INDEX, TAGS

__all__ = [
    "GAP_VALUE",
    "GENERATOR_VERSION",
    "TAGS",
    "TAG_INDEX",
    "Detector",
    "SynthConfig",
    "SynthImage",
    "generate",
]
