import numpy as np
import pytest
import torch

from models.synth import TAGS
from models.tagger.baseline import ProfileBaseline, profile_features
from models.tagger.data import TRAIN, images
from models.tagger.metrics import expected_calibration_error, summary
from models.tagger.net import TaggerConfig, TaggerNet, preprocess


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TaggerNet(TaggerConfig(TAGS, size=32, widths=(4, 8))).eval()


@pytest.mark.parametrize("shape", [(1, 1), (3, 200), (129, 77), (300, 300)])
@pytest.mark.parametrize("dtype", [torch.uint16, torch.int32, torch.float32, torch.float64])
def test_preprocess_any_size_and_dtype(shape, dtype):
    x = (torch.rand(shape) * 1000).to(dtype)
    out = preprocess(x, 32)
    assert out.shape == (5, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_nan_and_negative_pixels_are_masked_not_counted():
    x = torch.rand(40, 40) * 100
    bad = x.clone()
    bad[:, 10:13] = -1.0  # a detector gap
    bad[5, 5] = float("nan")
    out = preprocess(bad, 40)
    assert torch.isfinite(out).all()
    assert out[3, 5, 5] == 0 and (out[3, :, 10:13] == 0).all()  # validity channel
    assert (out[0, :, 10:13] == 0).all()


def test_refuses_what_it_cannot_read():
    with pytest.raises(ValueError):
        preprocess(torch.rand(2, 8, 8))
    with pytest.raises(ValueError):
        preprocess(torch.full((8, 8), float("nan")))


def test_saturation_channel_marks_pixels_at_the_max():
    x = torch.rand(32, 32)
    x[10:13, 10:13] = 50.0
    out = preprocess(x, 32)
    assert out[4, 10:13, 10:13].min() == 1 and out[4].sum() == 9


def test_tag_images_returns_a_probability_per_tag(net):
    probs = net.tag_images([torch.rand(50, 70) * 10, torch.rand(128, 128).double()])
    assert probs.shape == (2, len(TAGS))
    assert ((probs >= 0) & (probs <= 1)).all()


def test_ece_of_perfectly_calibrated_and_of_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(20000, 1))
    y = (rng.uniform(size=p.shape) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.02
    assert expected_calibration_error(np.round(p), 1 - y) > 0.4


def test_baseline_fits_and_scores():
    ims = images(range(60), TRAIN)
    feats = np.stack([profile_features(im) for im in ims])
    labels = np.stack([im.tag_vector() for im in ims])
    labels[0] = 1 - labels[0]  # every tag needs both classes to fit
    base = ProfileBaseline(len(TAGS)).fit(feats, labels)
    s = summary(base.predict_proba(feats), labels, TAGS)
    assert 0 <= s["map"] <= 1 and set(s["tags"]) == set(TAGS)
