import numpy as np
import pytest
import torch

from models.superres import metrics
from models.superres.data import bin_image, heldout_pairs
from models.superres.eval import bicubic
from models.superres.net import SuperResConfig, SuperResNet
from models.superres.train import train


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SuperResNet(SuperResConfig(channels=8, n_blocks=1)).eval()


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(17, 23), (1, 1), (32, 32)])
def test_odd_sizes_give_factor_times_larger_output(net, factor, shape):
    out = net(torch.rand(2, 1, *shape) * 100, factor)
    assert out.shape == (2, 1, shape[0] * factor, shape[1] * factor)
    assert torch.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize("dtype", [torch.uint16, torch.int32, torch.float64, torch.float16])
def test_any_count_dtype_is_accepted(net, dtype):
    x = (torch.rand(1, 1, 8, 8) * 50).to(dtype)
    assert net(x, 2).dtype == torch.float32


def test_nan_and_negative_pixels_read_as_zero(net):
    x = torch.rand(1, 1, 8, 8) * 50
    bad = x.clone()
    bad[0, 0, 2, 3] = float("nan")
    bad[0, 0, 4, 4] = -1.0
    clean = x.clone()
    clean[0, 0, 2, 3] = 0.0
    clean[0, 0, 4, 4] = 0.0
    torch.testing.assert_close(net(bad, 2), net(clean, 2))


def test_bad_input_is_refused(net):
    with pytest.raises(ValueError):
        net(torch.rand(8, 8), 2)
    with pytest.raises(ValueError):
        net(torch.rand(1, 1, 8, 8), 8)
    with pytest.raises(ValueError):
        SuperResNet(SuperResConfig(factors=(3,)))


def test_binning_conserves_counts():
    img = np.arange(64, dtype=float).reshape(8, 8)
    assert bin_image(img, 4).sum() == img.sum()
    assert bin_image(img, 2).shape == (4, 4)


def test_metrics_prefer_the_truth():
    _, truth, mask, centers = heldout_pairs(2, 4, seed0=123)
    t, m, c = truth[0], mask[0], tuple(centers[0])
    noisy = t * np.exp(np.random.default_rng(0).normal(0, 0.3, t.shape))
    assert metrics.psnr(t, t, m) > 100
    assert metrics.ssim(t, t, m) == pytest.approx(1.0)
    assert metrics.iq_error(t, t, m, c) == 0.0
    assert metrics.psnr(noisy, t, m) < 40 and metrics.ssim(noisy, t, m) < 1.0
    assert metrics.iq_error(noisy, t, m, c) > 0


def test_bicubic_baseline_preserves_total_roughly():
    lr = np.full((1, 8, 8), 16.0)
    up = bicubic(lr, 4)
    assert up.shape == (1, 32, 32)
    np.testing.assert_allclose(up, 1.0, rtol=1e-5)


def test_same_seed_same_weights(tmp_path):
    kw = dict(epochs=1, n_images=8, batch_size=4, eval_images=2, progress=False,
              config=SuperResConfig(channels=8, n_blocks=1))
    a = train(seed=3, out=tmp_path / "a.pt", **kw)
    b = train(seed=3, out=tmp_path / "b.pt", **kw)
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(v, b["state_dict"][k], rtol=0, atol=0)
    assert a["seed"] == 3 and a["generator"]["version"] and "x4" in a["metrics"]
