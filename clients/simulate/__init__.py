"""A simulated beamline to run Beamsteer against: virtual samples with known ground truth,
motors with speeds, a detector, reductions, and the steered-vs-grid-vs-random comparison.

Needs numpy (``pip install 'beamsteer[sim]'``); tqdm for a progress bar if present.
"""

from clients.simulate.beamline import Beamline, Motor
from clients.simulate.images import ImageDetector
from clients.simulate.reduce import CurveReducer, Reducer
from clients.simulate.run import Report, Result, compare, run_steered
from clients.simulate.sample import SAMPLES, Axis, GradientFilm, Sample

__all__ = ["SAMPLES", "Axis", "Beamline", "CurveReducer", "GradientFilm", "ImageDetector",
           "Motor", "Reducer",
           "Report", "Result", "Sample", "compare", "run_steered"]
