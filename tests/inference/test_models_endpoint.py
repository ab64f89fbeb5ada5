"""The plain endpoint: .npy / TIFF / EDF / JSON in, tags (JSON) or a .npy image out."""

from __future__ import annotations

import io

import numpy as np
import tifffile

from models import registry
from tests.inference.conftest import images


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _edf(a: np.ndarray) -> bytes:
    head = (f"{{\nHeaderID = EH:000001:000000:000000 ;\nByteOrder = LowByteFirst ;\n"
            f"DataType = UnsignedShort ;\nDim_1 = {a.shape[1]} ;\nDim_2 = {a.shape[0]} ;\n"
            f"Size = {a.size * 2} ;\n").encode()
    head = head.ljust(510) + b"}\n"
    return head + a.astype("<u2").tobytes()


def test_superres_npy_in_npy_out(client) -> None:
    (im,) = images(1)
    r = client.post("/api/v1/models/superres/infer?factor=4", content=_npy(im),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    out = np.load(io.BytesIO(r.content))
    np.testing.assert_allclose(out, registry.load("superres").predict(im, factor=4),
                               rtol=1e-4, atol=1e-4)
    small = client.post("/api/v1/models/superres/infer?format=json",
                        json={"image": [[1, 2], [3, 4]], "factor": 2}).json()
    assert small["shape"] == [4, 4] and np.array(small["counts"]).shape == (4, 4)


def test_tagger_tiff_multipart_edf_and_json(client, tagger_checkpoint) -> None:
    (im,) = images(1, (48, 48), seed=3)
    counts = im.astype(np.uint16)
    expected = registry.load(tagger_checkpoint).predict(counts.astype(np.float32))
    tif = io.BytesIO()
    tifffile.imwrite(tif, counts)
    answers = [
        client.post("/api/v1/models/tagger/infer",
                    files={"file": ("frame.tif", tif.getvalue(), "image/tiff")}),
        client.post("/api/v1/models/tagger/infer", content=_edf(counts)),
        client.post("/api/v1/models/tagger/infer", json={"image": counts.tolist()}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        tags = r.json()["tags"]
        assert list(tags) == list(expected)
        np.testing.assert_allclose(list(tags.values()), list(expected.values()), atol=1e-5)


def test_models_listed_and_bad_uploads_refused(client) -> None:
    listed = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert listed["superres"]["ready"] and listed["tagger"]["task"] == "multi-label tagging"
    r = client.post("/api/v1/models/tagger/infer", content=b"GIF89a....")
    assert r.status_code == 422 and "expected .npy, TIFF or EDF" in r.text
    r = client.post("/api/v1/models/tagger/infer", content=_npy(np.zeros((2, 3, 4))))
    assert r.status_code == 422 and "expected one 2-D image" in r.text
    r = client.post("/api/v1/models/tagger/infer",
                    content=_npy(np.full((4, 4), -1.0, np.float32)))
    assert r.status_code == 422 and "no valid (finite, non-negative) pixel" in r.text
    assert client.post("/api/v1/models/nope/infer", content=b"").status_code == 404


def test_metrics_per_model(client) -> None:
    client.post("/api/v1/models/tagger/infer", json={"image": [[1, 2], [3, 4]]})
    text = client.get("/metrics").text
    for line in ('beamsteer_inference_requests_total{model="tagger",outcome="success",'
                 'version="1"}',
                 'beamsteer_inference_batch_size_bucket{le="1.0",model="tagger",version="1"}',
                 'beamsteer_inference_queue_depth{model="tagger",version="1"} 0.0',
                 'beamsteer_inference_model_ready{model="superres",version="1"} 1.0',
                 'beamsteer_inference_request_seconds_count{model="tagger",version="1"}'):
        assert line in text, line
    assert 'outcome="failed"' in text  # the refused input above
