"""Open Inference Protocol (KServe v2) tensors: JSON data and the binary-data extension.

A request body is either JSON, or (binary extension) a JSON header of
``Inference-Header-Content-Length`` bytes followed by each binary input's raw
little-endian bytes, in input order, each input naming its size in
``parameters.binary_data_size``. Replies mirror that when an output asks for
``binary_data`` (or the request sets ``binary_data_output``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DTYPES = {"BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
          "FP32": "<f4", "FP64": "<f8"}
TYPE_NAMES = {np.dtype(v).newbyteorder("=").str: k for k, v in DTYPES.items()}


class ProtocolError(ValueError):
    """A request that does not follow the protocol; the message says where."""


@dataclass
class InferRequest:
    """A parsed request: its id, parameters, input arrays, and which outputs go binary."""

    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, np.ndarray]
    binary_outputs: set[str] = field(default_factory=set)
    all_binary: bool = False


def datatype_of(a: np.ndarray) -> str:
    """The protocol's name of an array's dtype."""
    return TYPE_NAMES[a.dtype.newbyteorder("=").str]


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a JSON or binary-extension request body (raises ProtocolError)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {header_length} does not fit "
                            f"a body of {len(body)} bytes")
    head, blob = (body, b"") if header_length is None else (body[:header_length],
                                                            body[header_length:])
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"request header is not JSON: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise ProtocolError("request needs a non-empty 'inputs' list")
    inputs, offset = {}, 0
    for i, t in enumerate(req["inputs"]):
        a, offset = _tensor(t, blob, offset, f"inputs[{i}]")
        inputs[t["name"]] = a
    if offset != len(blob):
        raise ProtocolError(f"{len(blob) - offset} binary bytes left after the last input")
    params = req.get("parameters") or {}
    outs = req.get("outputs") or []
    binary = {o.get("name") for o in outs if isinstance(o, dict)
              and (o.get("parameters") or {}).get("binary_data")}
    return InferRequest(req.get("id"), dict(params), inputs, binary,
                        bool(params.get("binary_data_output")))


def _tensor(t: Any, blob: bytes, offset: int, where: str) -> tuple[np.ndarray, int]:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise ProtocolError(f"{where}: needs a 'name'")
    dt, shape = t.get("datatype"), t.get("shape")
    if dt not in DTYPES:
        raise ProtocolError(f"{where}.datatype: {dt!r} not supported; use one of {list(DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ProtocolError(f"{where}.shape: must be a list of non-negative integers")
    dtype, n = np.dtype(DTYPES[dt]), int(np.prod(shape))
    size = (t.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != n * dtype.itemsize or offset + size > len(blob):
            raise ProtocolError(f"{where}: binary_data_size {size} does not match shape {shape} "
                                f"of {dt} or the bytes sent")
        a = np.frombuffer(blob[offset:offset + size], dtype=dtype).reshape(shape)
        return a, offset + size
    try:
        a = np.asarray(t.get("data"), dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"{where}.data: {e}") from None
    if a.size != n:
        raise ProtocolError(f"{where}.data: {a.size} values for shape {shape}")
    return a.reshape(shape), offset


def encode_response(model: str, version: str, request_id: str | None,
                    outputs: dict[str, np.ndarray], binary: set[str],
                    all_binary: bool) -> tuple[bytes, int | None]:
    """The reply body, and the JSON header's length when any output is binary."""
    specs, blobs = [], []
    for name, a in outputs.items():
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        spec: dict[str, Any] = {"name": name, "datatype": datatype_of(a), "shape": list(a.shape)}
        if all_binary or name in binary:
            spec["parameters"] = {"binary_data_size": a.nbytes}
            blobs.append(a.tobytes())
        else:
            spec["data"] = a.ravel().tolist()
        specs.append(spec)
    head: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": specs}
    if request_id is not None:
        head["id"] = request_id
    header = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
