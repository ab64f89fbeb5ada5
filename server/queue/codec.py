"""Jobs and results on the wire: a JSON header and raw arrays, no pickle.

Layout: 4-byte big-endian header length, the JSON header (with ``arrays``: name, dtype,
shape, offset, nbytes), then the array bytes back to back. Decoding copies nothing it does
not have to and never executes code from the payload.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

_LEN = struct.Struct(">I")
_DTYPE_KINDS = "biuf"  # bool, signed, unsigned, float: what detector images and nets use


def pack(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Header (JSON-able) and named arrays -> bytes."""
    specs, blobs, offset = [], [], 0
    for name, a in (arrays or {}).items():
        a = np.ascontiguousarray(a)
        if a.dtype.kind not in _DTYPE_KINDS:
            raise TypeError(f"array {name!r}: dtype {a.dtype} cannot be sent")
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape),
                      "offset": offset, "nbytes": a.nbytes})
        blobs.append(a.tobytes())
        offset += a.nbytes
    head = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(head)), head, *blobs])


def unpack_header(data: bytes) -> dict[str, Any]:
    """Only the JSON header (cheap: what a reply reader needs to route a reply)."""
    (n,) = _LEN.unpack_from(data)
    header: dict[str, Any] = json.loads(data[4:4 + n])
    return header


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Bytes -> (header, arrays). Raises ValueError on anything malformed."""
    try:
        (n,) = _LEN.unpack_from(data)
        header = json.loads(data[4:4 + n])
        body = memoryview(data)[4 + n:]
        arrays: dict[str, np.ndarray] = {}
        for s in header.pop("arrays"):
            dtype = np.dtype(s["dtype"])
            if dtype.kind not in _DTYPE_KINDS:
                raise ValueError(f"dtype {dtype} not allowed")
            start, nbytes = int(s["offset"]), int(s["nbytes"])
            if start < 0 or start + nbytes > len(body):
                raise ValueError("array runs past the end of the payload")
            arrays[s["name"]] = np.frombuffer(body[start:start + nbytes], dtype=dtype).reshape(
                s["shape"])
    except (struct.error, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed payload: {e}") from None
    return header, arrays
