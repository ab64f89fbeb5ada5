import numpy as np
import pytest

from models.synth import GAP_VALUE, TAGS, Detector, SynthConfig, generate


def radial_profile(img, q, mask, bins):
    idx = np.digitize(q[mask], bins)
    return np.array([img[mask][idx == i].mean() if (idx == i).any() else np.nan
                     for i in range(1, len(bins))])


def test_same_seed_same_image_and_different_seed_differs():
    a, b, c = generate(7), generate(7), generate(8)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.tags == b.tags
    assert a.counts.shape != c.counts.shape or not np.array_equal(a.counts, c.counts)


def test_every_tag_occurs_and_is_boolean():
    imgs = [generate(s) for s in range(80)]
    seen = {t: sum(im.tags[t] for im in imgs) for t in TAGS}
    assert set(imgs[0].tags) == set(TAGS)
    assert all(n > 0 for n in seen.values()), seen
    assert all(n < len(imgs) for n in seen.values()), seen


def test_ring_image_has_radial_peak_at_ring_q():
    cfg = SynthConfig(p_blank=0, p_ring=1, p_many_rings=0, p_halo=0, p_spots=0, p_arcs=0,
                      p_oriented_cylinders=0, defects=False)
    for seed in range(5):
        im = generate(seed, cfg)
        assert im.tags["ring"]
        q, _, _ = im.detector.q_map()
        q0 = im.info["ring_q"]
        bins = np.linspace(q0 * 0.7, q0 * 1.3, 25)
        prof = radial_profile(im.counts.astype(float), q, im.mask, bins)
        centres = 0.5 * (bins[1:] + bins[:-1])
        peak = centres[np.nanargmax(prof)]
        assert abs(peak - q0) < 0.05 * q0 + (bins[1] - bins[0])
        # well above the shoulders
        assert np.nanmax(prof) > 1.3 * np.nanmean(prof[[0, 1, -2, -1]])


def test_defect_tags_match_the_image():
    for seed in range(60):
        im = generate(seed)
        assert im.tags["beam_off_image"] == (not im.detector.beam_on_image())
        if im.tags["saturation"]:
            assert (im.counts == im.counts.max()).sum() >= 8
        if im.detector.gaps:
            assert (im.counts == GAP_VALUE).any()
        if im.tags["blank"]:
            assert not any(im.tags[t] for t in ("ring", "halo", "spots", "diffuse_low_q"))
        assert im.counts.dtype == np.float32
        assert np.all(im.expected >= 0)


def test_shapes_and_geometry_follow_the_config():
    cfg = SynthConfig(shapes=((96, 160),), beam_region=(0.1, 0.2), exposure=(0.1, 0.2))
    im = generate(3, cfg)
    assert im.counts.shape == (96, 160)


def test_q_map_matches_bragg_geometry():
    det = Detector(shape=(3, 3), pixel_size=1e-3, distance=1.0, wavelength=1.0,
                   beam_center=(1.5, 0.5))
    q, qx, qy = det.q_map()
    two_theta = np.arctan(2e-3 / 1.0)
    assert q[1, 2] == pytest.approx(4 * np.pi * np.sin(two_theta / 2))
    assert qy[1, 2] == pytest.approx(0.0, abs=1e-12) and qx[1, 2] > 0
