"""Typed errors of the steering core.

Each carries the data a caller needs; ``server/api/errors.py`` maps them to HTTP in one place.
"""

from __future__ import annotations


class SteeringError(Exception):
    """Base class of every error the steering core raises on purpose."""


class InvalidInput(SteeringError):
    """Input that the core refuses: names the offending field and the reason.

    Args:
        field: Dotted/indexed path of the field, e.g. ``measurements[2].position.x``.
        reason: Human-readable reason, e.g. ``"above upper bound 10.0"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidSpec(InvalidInput):
    """An experiment spec that cannot be run."""


class InvalidMeasurement(InvalidInput):
    """A measurement that does not fit its experiment's spec."""


class UnknownExperiment(SteeringError):
    """No experiment with this id."""

    def __init__(self, experiment_id: str) -> None:
        super().__init__(f"unknown experiment {experiment_id!r}")
        self.experiment_id = experiment_id


class UnknownSuggestion(SteeringError):
    """No suggestion with this id in this experiment."""

    def __init__(self, experiment_id: str, suggestion_id: str) -> None:
        super().__init__(f"unknown suggestion {suggestion_id!r} in experiment {experiment_id!r}")
        self.experiment_id = experiment_id
        self.suggestion_id = suggestion_id


class Conflict(SteeringError):
    """The request contradicts the stored state (e.g. an idempotency key reused for
    different content, or a write to a closed experiment). ``in_body``: ``field`` names a
    field of the request's body, not of the stored state."""

    def __init__(self, field: str, reason: str, *, in_body: bool = False) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.in_body = in_body


class Busy(SteeringError):
    """The experiment is held by another request for too long; try again later.

    Args:
        reason: What is busy.
        retry_after: Seconds a caller should wait.
    """

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class FitFailed(SteeringError):
    """A hyperparameter fit failed; the previous model stays in use."""

    def __init__(self, output: str, reason: str) -> None:
        super().__init__(f"fit of output {output!r} failed: {reason}")
        self.output = output
        self.reason = reason
