"""The spec's ``reductions`` field: validated once, in the core, naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from server.reductions import q_integral
from server.steering.errors import InvalidSpec
from server.steering.spec import ExperimentSpec, Reduction

BASE = {"name": "a", "parameters": [{"name": "x", "lower": 0, "upper": 1}],
        "outputs": [{"name": "ring_prob"}, {"name": "iq"}]}


def test_round_trip_through_dict() -> None:
    spec = ExperimentSpec.from_dict({**BASE, "reductions": {
        "ring_prob": {"model": "tagger", "output": "ring"},
        "iq": {"q_min": 0.01, "q_max": 0.05, "q_per_pixel": 0.002, "center": [10, 12]}}})
    assert ExperimentSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["reductions"]["iq"]["center"] == [10.0, 12.0]


@pytest.mark.parametrize(("reductions", "field"), [
    ({"ring_prob": {"model": "tagger"}}, "reductions.ring_prob.output"),
    ({"nope": {"model": "tagger", "output": "ring"}}, "reductions.nope"),
    ({"iq": {"q_min": 0.2, "q_max": 0.1}}, "reductions.iq.q_max"),
    ({"iq": {"q_min": 0, "q_max": 1, "q_per_pixel": 0}}, "reductions.iq.q_per_pixel"),
    ({"iq": {"q_min": 0, "q_max": 1, "colour": 1}}, "reductions.iq"),
    ({"iq": {"kind": "fft", "q_min": 0, "q_max": 1}}, "reductions.iq.kind"),
])
def test_bad_reductions_name_their_field(reductions: dict, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        ExperimentSpec.from_dict({**BASE, "reductions": reductions})
    assert info.value.field == field


def test_q_integral_is_the_mean_over_the_ring() -> None:
    image = np.zeros((21, 21))
    yy, xx = np.mgrid[0:21, 0:21]
    r = np.hypot(yy - 10, xx - 10)
    image[(r >= 3) & (r < 5)] = 7.0
    image[0, 0] = np.nan  # ignored, and outside anyway
    assert q_integral(image, Reduction(q_min=0.3, q_max=0.5, q_per_pixel=0.1)) == 7.0
    with pytest.raises(ValueError, match="no valid pixel"):
        q_integral(image, Reduction(q_min=50, q_max=60))
