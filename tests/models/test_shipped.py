"""The shipped weights still reach their quality on fresh held-out images.

Fresh = seeds neither trained on nor used for the numbers in the model cards.
The thresholds are the issue's goals.
"""

import pytest

from models import registry
from models.superres.data import HELDOUT_SEED0
from models.superres.eval import evaluate as evaluate_superres


@pytest.fixture(scope="module")
def superres_metrics():
    net = registry.load("superres").net
    return evaluate_superres(net, n=16, seed0=HELDOUT_SEED0 + 500_000)


@pytest.mark.parametrize("factor,gain_db", [(2, 2.0), (4, 3.0)])
def test_shipped_superres_beats_bicubic(superres_metrics, factor, gain_db):
    r = superres_metrics[f"x{factor}"]
    assert r["psnr_gain_db"] >= gain_db
    assert r["cnn"]["ssim"] > r["bicubic"]["ssim"]
    assert r["iq_error_reduction"] >= 0.30


def test_registry_lists_and_describes_the_shipped_nets():
    assert "superres" in registry.available()
    info = registry.load("superres").info
    assert info.generator_version and info.seed == 0 and info.metrics["x4"]["psnr_gain_db"] > 3
