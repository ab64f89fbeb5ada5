"""Images as people send them: a raw body (.npy, TIFF, EDF), a multipart file, or JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Request

from server.images import ImageError, check_image, decode_npy_b64, read_image


async def image_from_request(request: Request) -> tuple[np.ndarray, dict[str, Any]]:
    """The uploaded image and any extra form/JSON fields (e.g. ``factor``).

    JSON bodies: ``{"image": [[...], ...]}`` (small images) or ``{"npy_b64": "..."}``.
    Multipart: a ``file`` field, other fields returned as strings.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form() as form:  # closes the spooled upload files
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ImageError("multipart upload needs a 'file' field")
            data = await upload.read()
            fields = {k: v for k, v in form.items() if k != "file"}
        return read_image(data), fields
    body = await request.body()
    if ctype == "application/json":
        return image_from_json(body)
    return read_image(body), {}


def image_from_json(body: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """``{"image": nested lists}`` or ``{"npy_b64": base64 .npy}``, plus other fields."""
    import json

    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImageError(f"body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ImageError('JSON body must be an object {"image": [[...]]}')
    rest = {k: v for k, v in doc.items() if k not in ("image", "npy_b64")}
    if "npy_b64" in doc:
        return decode_npy_b64(doc["npy_b64"]), rest
    try:
        return check_image(np.asarray(doc.get("image"), dtype=np.float32)), rest
    except (TypeError, ValueError) as e:
        raise ImageError(f"image: {e}") from None
