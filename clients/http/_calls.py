"""The requests of the API, described once and sent by both the sync and async clients.

A :class:`Call` says what to send, whether repeating it is harmless, and how to read the
reply; :mod:`clients.http.sync` and :mod:`clients.http.aio` only differ in how they wait.
"""

from __future__ import annotations

import base64
import io
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from clients.http.errors import ValidationError, field_path
from clients.http.models import (
    Experiment,
    Measurement,
    Measurements,
    Posterior,
    Suggestion,
)

T = TypeVar("T")
API = "/api/v1/experiments"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: method, path, body/query, whether a repeat is harmless, reply parser."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotent: bool = True
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a body JSON cannot carry (NaN, inf), naming the field, as the server
        would: ``ValidationError("measurements[0].values.intensity", ...)``, not
        httpx's ``ValueError: Out of range float values are not JSON compliant``.

        Raises:
            ValidationError: A non-finite number in the body (nothing was sent).
        """
        where = _non_finite(self.json, ["body"])
        if where is not None:
            raise ValidationError(f"{field_path(where)}: must be finite (no NaN or inf)",
                                  detail=[{"loc": where, "type": "finite_number",
                                           "msg": "must be finite (no NaN or inf)"}])


def _non_finite(value: Any, loc: list[str | int]) -> list[str | int] | None:
    """The ``loc`` of the first non-finite number in a JSON body, or ``None``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else loc
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, [*loc, k])
        if found is not None:
            return found
    return None


def _experiment(r: httpx.Response) -> Experiment:
    return Experiment.model_validate(r.json())


def _suggestions(r: httpx.Response) -> list[Suggestion]:
    return [Suggestion.model_validate(s) for s in r.json()["suggestions"]]


def _stored(r: httpx.Response) -> list[Measurement]:
    body = r.json()
    return [Measurement.model_validate({**m, "created": c})
            for m, c in zip(body["measurements"], body["created"], strict=True)]


def create_experiment(spec: Mapping[str, Any]) -> Call[Experiment]:
    """POST an experiment (not repeatable: a lost reply would leave a second one)."""
    return Call("POST", API, _experiment, json=dict(spec), idempotent=False)


def get_experiment(experiment_id: str) -> Call[Experiment]:
    return Call("GET", f"{API}/{experiment_id}", _experiment)


def list_experiments() -> Call[list[Experiment]]:
    return Call("GET", API, lambda r: [Experiment.model_validate(e)
                                       for e in r.json()["experiments"]])


def set_status(experiment_id: str, status: str) -> Call[Experiment]:
    return Call("PATCH", f"{API}/{experiment_id}", _experiment, json={"status": status})


def suggest(experiment_id: str, n: int | None) -> Call[list[Suggestion]]:
    """POST an ask (not repeatable: a lost reply would leave extra pending suggestions)."""
    return Call("POST", f"{API}/{experiment_id}/suggestions", _suggestions,
                json={} if n is None else {"n": n}, idempotent=False)


def suggestions(experiment_id: str, status: str | None) -> Call[list[Suggestion]]:
    params = {} if status is None else {"status": status}
    return Call("GET", f"{API}/{experiment_id}/suggestions", _suggestions, params=params)


def abandon(experiment_id: str, suggestion_id: str) -> Call[Suggestion]:
    return Call("DELETE", f"{API}/{experiment_id}/suggestions/{suggestion_id}",
                lambda r: Suggestion.model_validate(r.json()))


def measure(experiment_id: str, items: Sequence[Mapping[str, Any]]) -> Call[list[Measurement]]:
    """POST a batch; repeatable because :func:`measurement_body` gave each item a key."""
    return Call("POST", f"{API}/{experiment_id}/measurements", _stored,
                json={"measurements": [dict(m) for m in items]})


def measurements_page(experiment_id: str, after: int,
                      limit: int) -> Call[tuple[Measurements, int | None]]:
    def parse(r: httpx.Response) -> tuple[Measurements, int | None]:
        body = r.json()
        return (Measurements(Measurement.model_validate(m) for m in body["measurements"]),
                body["next_after"])
    return Call("GET", f"{API}/{experiment_id}/measurements", parse,
                params={"after": after, "limit": limit})


def measurements_csv(experiment_id: str) -> Call[str]:
    return Call("GET", f"{API}/{experiment_id}/measurements", lambda r: r.text,
                params={"format": "csv"})


def posterior(experiment_id: str, points: Sequence[Sequence[float]] | None,
              grid: Mapping[str, int] | None,
              at: Mapping[str, float] | None) -> Call[Posterior]:
    """POST a posterior query (read-only, so repeatable)."""
    if (points is None) == (grid is None):
        raise TypeError("give exactly one of points= or grid=")
    body: dict[str, Any] = {}
    if points is not None:
        body["points"] = [[float(v) for v in p] for p in points]
    else:
        body["grid"] = dict(grid or {})
    if at is not None:
        body["at"] = dict(at)
    return Call("POST", f"{API}/{experiment_id}/posterior",
                lambda r: Posterior.model_validate(r.json()), json=body)


def npy_bytes(image: Any) -> bytes:
    """An array as ``.npy`` bytes (numpy is imported here, not with the client)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(image), allow_pickle=False)
    return buf.getvalue()


def _inferred(r: httpx.Response) -> Any:
    if r.headers.get("content-type", "").startswith("application/json"):
        body = r.json()
        return dict(body["tags"]) if "tags" in body else body
    import numpy as np

    return np.load(io.BytesIO(r.content), allow_pickle=False)


def infer(model: str, image: Any, params: Mapping[str, Any]) -> Call[Any]:
    """POST an image as raw ``.npy`` bytes (read-only, so repeatable)."""
    return Call("POST", f"/api/v1/models/{model}/infer", _inferred,
                params={k: v for k, v in params.items() if v is not None},
                content=npy_bytes(image),
                headers={"content-type": "application/octet-stream"})


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/health", lambda r: dict(r.json()))


def measurement_body(position: Mapping[str, float], values: Mapping[str, float] | None, *,
                     noise: Mapping[str, float] | None = None,
                     suggestion: str | Suggestion | None = None,
                     key: str | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     image: Any = None) -> dict[str, Any]:
    """One measurement as the wire wants it, with a fresh uuid4 ``key`` unless given, so
    that the request can be retried without ever storing it twice. An ``image`` (array)
    travels as base64 ``.npy``; the spec's reductions turn it into the missing values."""
    if values is None and image is None:
        raise TypeError("a measurement needs values or an image")
    body: dict[str, Any] = {"position": {k: float(v) for k, v in position.items()},
                            "values": {k: float(v) for k, v in (values or {}).items()},
                            "key": key or uuid.uuid4().hex}
    if image is not None:
        body["image"] = base64.b64encode(npy_bytes(image)).decode()
    if noise:
        body["noise"] = {k: float(v) for k, v in noise.items()}
    if suggestion is not None:
        body["suggestion_id"] = suggestion.id if isinstance(suggestion, Suggestion) else suggestion
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def batch_bodies(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Measurements given as mappings with the keyword names of :func:`measurement_body`
    (``suggestion_id`` is accepted for ``suggestion``); each gets a key unless it has one."""
    out = []
    for i, m in enumerate(items):
        extra = set(m) - {"position", "values", "noise", "suggestion", "suggestion_id", "key",
                          "metadata", "image"}
        if extra or "position" not in m or ("values" not in m and m.get("image") is None):
            raise TypeError(f"measurements[{i}]: needs position and values (or an image), "
                            f"got {sorted(m)}")
        out.append(measurement_body(
            m["position"], m.get("values"), noise=m.get("noise"),
            suggestion=m.get("suggestion", m.get("suggestion_id")), key=m.get("key"),
            metadata=m.get("metadata"), image=m.get("image")))
    return out
