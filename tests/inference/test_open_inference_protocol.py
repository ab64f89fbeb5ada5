"""Triton/KServe-style requests built by hand: JSON tensors and the binary extension."""

from __future__ import annotations

import json

import numpy as np

from models import registry
from tests.inference.conftest import images


def test_health_and_metadata(client, tagger_checkpoint) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/superres").json()
    assert meta["inputs"] == [{"name": "counts", "datatype": "FP32", "shape": [-1, -1, -1]}]
    assert meta["versions"] == ["1"] and meta["parameters"]["factors"] == [2, 4]
    tagger = client.get("/v2/models/tagger").json()
    assert tagger["outputs"][0] == {"name": "probabilities", "datatype": "FP32",
                                    "shape": [-1, 11]}
    assert tagger["parameters"]["tags"][0] == "ring"
    assert client.get("/v2/models/tagger/ready").json() == {"name": "tagger", "ready": True}
    missing = client.get("/v2/models/nope")
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]


def test_json_tensors(client) -> None:
    (im,) = images(1)
    r = client.post("/v2/models/superres/infer", json={
        "id": "req-1", "parameters": {"factor": 2},
        "inputs": [{"name": "counts", "shape": [32, 32], "datatype": "FP32",
                    "data": im.ravel().tolist()}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("req-1", "superres", "1")
    (out,) = body["outputs"]
    assert out["name"] == "counts" and out["shape"] == [64, 64] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(out["data"]).reshape(64, 64),
                               registry.load("superres").predict(im, factor=2),
                               rtol=1e-4, atol=1e-4)


def test_binary_tensors_batch(client, tagger_checkpoint) -> None:
    ims = np.stack(images(3, (40, 24)))
    raw = ims.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": "image", "shape": [3, 40, 24], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    r = client.post("/v2/models/tagger/infer", content=header + raw,
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    (out,) = json.loads(r.content[:n])["outputs"]
    assert out["shape"] == [3, 11] and out["parameters"]["binary_data_size"] == 3 * 11 * 4
    probs = np.frombuffer(r.content[n:], dtype="<f4").reshape(3, 11)
    direct = registry.load(tagger_checkpoint)
    for im, p in zip(ims, probs, strict=True):
        np.testing.assert_allclose(p, list(direct.predict(im).values()), rtol=1e-4, atol=1e-5)


def test_protocol_errors_have_the_protocol_shape(client) -> None:
    bad = [({"inputs": []}, "non-empty 'inputs'"),
           ({"inputs": [{"name": "counts", "shape": [2, 2], "datatype": "BYTES",
                         "data": ["a"] * 4}]}, "BYTES"),
           ({"inputs": [{"name": "counts", "shape": [2, 3], "datatype": "FP32",
                         "data": [1, 2]}]}, "2 values for shape [2, 3]"),
           ({"inputs": [{"name": "image", "shape": [2, 2], "datatype": "FP32",
                         "data": [1, 2, 3, 4]}]}, "one input named 'counts'")]
    for body, msg in bad:
        r = client.post("/v2/models/superres/infer", json=body)
        assert r.status_code == 400 and msg in r.json()["error"], r.text
    r = client.post("/v2/models/superres/infer", json={
        "parameters": {"factor": 3},
        "inputs": [{"name": "counts", "shape": [4, 4], "datatype": "FP32", "data": [1] * 16}]})
    assert r.status_code == 422 and "factor 3 not served" in r.json()["error"]
