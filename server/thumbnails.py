"""Small previews of detector images, kept with the measurement they belong to.

A thumbnail is the image binned down (area mean) to at most ``size`` pixels on its longer
side, log-scaled (``log1p`` of the valid pixels) to 8-bit grey and encoded as a PNG data
URL: a few kB, shown as-is by any browser, no image library needed on either side.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

THUMBNAIL_SIZE = 64


def _bin(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Mean over ``n`` near-equal blocks along ``axis``."""
    edges = np.linspace(0, a.shape[axis], n + 1).astype(int)[:-1]
    counts = np.diff(np.append(edges, a.shape[axis]))
    shape = [1, 1]
    shape[axis] = n
    return np.add.reduceat(a, edges, axis=axis) / counts.reshape(shape)


def thumbnail_pixels(image: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """The thumbnail as uint8 grey levels (H' x W', longer side ``min(size, longer side)``)."""
    a = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(a) & (a >= 0)
    a = np.log1p(np.where(valid, a, 0.0))
    h, w = a.shape
    scale = min(1.0, size / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    a = _bin(_bin(a, th, 0), tw, 1)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)


def png_bytes(grey: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a 2-D uint8 array."""
    h, w = grey.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + grey[i].tobytes() for i in range(h))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def thumbnail_data_url(image: np.ndarray, size: int = THUMBNAIL_SIZE) -> str:
    """``data:image/png;base64,...`` of the image's thumbnail."""
    png = png_bytes(thumbnail_pixels(image, size))
    return "data:image/png;base64," + base64.b64encode(png).decode()
