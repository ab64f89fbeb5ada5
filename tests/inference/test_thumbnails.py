"""Thumbnails of detector images: binned, log-scaled 8-bit PNGs that any decoder reads."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from server.thumbnails import thumbnail_data_url, thumbnail_pixels

Image = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize(("shape", "expected"), [((100, 37), (64, 24)), ((2048, 2048), (64, 64)),
                                                 ((16, 8), (16, 8)), ((1, 300), (1, 64))])
def test_thumbnail_shape_keeps_aspect(shape, expected) -> None:
    a = np.random.default_rng(0).poisson(5.0, shape).astype(np.float32)
    assert thumbnail_pixels(a).shape == expected


def test_png_decodes_to_the_pixels_and_ignores_invalid() -> None:
    a = np.random.default_rng(1).poisson(5.0, (40, 50)).astype(np.float32)
    a[0, 0], a[1, 1] = np.nan, -3
    url = thumbnail_data_url(a)
    assert url.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert im.mode == "L"
    px = np.asarray(im)
    assert np.array_equal(px, thumbnail_pixels(a))
    assert px.min() == 0 and px.max() == 255
    assert len(url) < 8000


def test_flat_image_is_black() -> None:
    assert not thumbnail_pixels(np.full((8, 8), 7.0)).any()
