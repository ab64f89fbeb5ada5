"""Detector images from the bytes people upload: ``.npy``, TIFF or EDF (told apart by
their first bytes), as an H x W array. Nothing here executes code from a file
(``allow_pickle=False``)."""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np

# EDF DataType -> numpy type (ESRF data format, as written by SPEC/pyFAI/fabio).
_EDF_TYPES = {
    "unsignedbyte": "u1", "signedbyte": "i1", "unsignedshort": "u2", "signedshort": "i2",
    "unsignedinteger": "u4", "signedinteger": "i4", "unsignedint": "u4", "signedint": "i4",
    "unsignedlong": "u4", "signedlong": "i4", "unsigned64": "u8", "signed64": "i8",
    "floatvalue": "f4", "float": "f4", "doublevalue": "f8", "double": "f8",
}


class ImageError(ValueError):
    """The bytes are not an image this service reads; the message says why."""


def read_image(data: bytes) -> np.ndarray:
    """Decode one 2-D image from ``.npy``, TIFF or EDF bytes.

    Raises:
        ImageError: unknown format, or not a single 2-D real-valued image.
    """
    if data.startswith(b"\x93NUMPY"):
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise ImageError(f"unreadable .npy: {e}") from None
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        a = _tiff(data)
    elif data.lstrip()[:1] == b"{" and b"Dim_1" in data[:8192]:
        a = _edf(data)
    else:
        raise ImageError("not an image: expected .npy, TIFF or EDF bytes")
    return check_image(a)


def decode_npy_b64(text: object) -> np.ndarray:
    """A base64 string of ``.npy`` bytes (how JSON carries an image) -> the image."""
    if not isinstance(text, str):
        raise ImageError("must be a base64 string of .npy bytes")
    try:
        return read_image(base64.b64decode(text, validate=True))
    except binascii.Error as e:
        raise ImageError(f"not base64: {e}") from None


def check_image(a: np.ndarray, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """One H x W real-valued image with at least one pixel, within ``max_pixels``."""
    a = np.squeeze(np.asarray(a))
    if a.ndim != 2 or min(a.shape) < 1:
        raise ImageError(f"expected one 2-D image, got shape {list(a.shape)}")
    if a.dtype.kind not in "biuf":
        raise ImageError(f"expected real-valued pixels, got dtype {a.dtype}")
    if a.size > max_pixels:
        raise ImageError(f"image of {a.size} pixels is larger than {max_pixels}")
    return a


def _tiff(data: bytes) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(io.BytesIO(data)))
    except Exception as e:  # tifffile raises many kinds on corrupt files
        raise ImageError(f"unreadable TIFF: {e}") from None


def _edf(data: bytes) -> np.ndarray:
    """An uncompressed single-frame EDF: a ``{ key = value ; }`` header, then raw pixels."""
    end = data.find(b"}")
    if end < 0:
        raise ImageError("EDF header has no closing '}'")
    header = dict(re.findall(r"(\w+)\s*=\s*([^;]*?)\s*;", data[:end].decode("latin-1")))
    body_start = data.find(b"\n", end) + 1
    try:
        w, h = int(header["Dim_1"]), int(header["Dim_2"])
        dtype = np.dtype(_EDF_TYPES[header.get("DataType", "").lower()])
    except (KeyError, ValueError):
        raise ImageError("EDF header lacks Dim_1/Dim_2 or has an unknown DataType") from None
    if header.get("Compression", "None").lower() not in ("none", ""):
        raise ImageError(f"compressed EDF ({header['Compression']}) is not supported")
    order = ">" if header.get("ByteOrder", "LowByteFirst") == "HighByteFirst" else "<"
    n = w * h * dtype.itemsize
    if len(data) - body_start < n:
        raise ImageError(f"EDF data is shorter than {w} x {h} {dtype}")
    return np.frombuffer(data[body_start:body_start + n], dtype=dtype.newbyteorder(order)
                         ).reshape(h, w)
