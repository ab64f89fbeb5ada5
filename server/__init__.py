"""Beamsteer service: GP steering over HTTP, a durable store, and an inference queue."""

__version__ = "0.1.0"
