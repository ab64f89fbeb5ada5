"""A simulated beamline: motors with speeds, a detector on a virtual sample, a reducer.

Time is simulated, not slept: moving and counting add to clocks, so a 200-point run takes
as long as the server needs, and the report says how long the beam time would have been.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.simulate.images import ImageDetector
from clients.simulate.reduce import CurveReducer, Reducer
from clients.simulate.sample import Sample


@dataclass
class Motor:
    """One axis. All motors move at once, so a move takes as long as the slowest axis,
    plus ``settle`` seconds (the encoder settling, a backlash correction)."""

    name: str
    speed: float  # units/s
    position: float = 0.0
    settle: float = 0.1

    def time_to(self, target: float) -> float:
        """Seconds to reach ``target`` from here (without settling)."""
        return abs(target - self.position) / self.speed


@dataclass
class Beamline:
    """Motors over a sample's axes, a detector, and a reduction.

    Args:
        sample: The virtual sample.
        exposure: Seconds of counting per point.
        reducer: Raw data -> scalars (default: the ring of a 1-D curve).
        seed: Of the counting noise.
        detector: An image detector: each point is then a synthetic SAXS image, posted
            as it is for the server to reduce (the spec's ``reductions``).
    """

    sample: Sample
    exposure: float = 1.0
    reducer: Reducer | None = None
    seed: int = 0
    detector: ImageDetector | None = None
    motors: dict[str, Motor] = field(init=False)
    travel_s: float = field(init=False, default=0.0)
    count_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.motors = {a.name: Motor(a.name, a.speed, position=a.lower)
                       for a in self.sample.axes}
        self.reducer = self.reducer or CurveReducer(self.sample.q)
        self._rng = np.random.default_rng(self.seed)

    @property
    def outputs(self) -> list[str]:
        """What each measurement reports."""
        if self.detector is not None:
            return self.detector.outputs
        assert self.reducer is not None
        return list(self.reducer.outputs)

    @property
    def reductions(self) -> dict[str, dict[str, Any]] | None:
        """The spec's ``reductions`` (image detectors only)."""
        return None if self.detector is None else self.detector.reductions

    def truth(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Ground-truth maps of what this beamline reports (where one is known)."""
        if self.detector is not None:
            return self.detector.truth(self.sample, X)
        return self.sample.truth(X)

    def move(self, position: Mapping[str, float]) -> float:
        """Move every motor to ``position``; returns (and tallies) the seconds it took."""
        dt = max(m.time_to(position[name]) for name, m in self.motors.items())
        dt += max(m.settle for m in self.motors.values()) if dt > 0 else 0.0
        for name, m in self.motors.items():
            m.position = float(position[name])
        self.travel_s += dt
        return dt

    def measure(self) -> dict[str, float]:
        """Count at the current position and reduce the data."""
        assert self.reducer is not None
        here = {name: m.position for name, m in self.motors.items()}
        data = self.sample.scatter(here, self._rng, self.exposure)
        self.count_s += self.exposure
        return self.reducer.reduce(data)

    def read(self) -> dict[str, Any]:
        """Count here: ``{"image": array}`` with an image detector, else ``{"values": ..}``."""
        if self.detector is None:
            return {"values": self.measure()}
        here = {name: m.position for name, m in self.motors.items()}
        image = self.detector.image(self.sample, here, self._rng, self.exposure)
        self.count_s += self.exposure
        return {"image": image}

    def collect(self, positions: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
        """Move to and read each position in turn (measurement items without position)."""
        out = []
        for p in positions:
            self.move(p)
            out.append(self.read())
        return out

    def visit(self, positions: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
        """Move to and measure each position in turn."""
        out = []
        for p in positions:
            self.move(p)
            out.append(self.measure())
        return out
