"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Asks and tells live between ~1 ms and a few s; refits between ~10 ms and minutes.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The service's metrics; ``registry`` is what ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.suggest_seconds = Histogram(
            "beamsteer_suggest_seconds", "Time to answer an ask (suggestions), server side",
            buckets=_FAST, registry=r)
        self.measure_seconds = Histogram(
            "beamsteer_measure_seconds", "Time to store and ingest a tell (measurements)",
            buckets=_FAST, registry=r)
        self.refit_seconds = Histogram(
            "beamsteer_refit_seconds", "Duration of hyperparameter refits", buckets=_SLOW,
            registry=r)
        self.refit_failures = Counter(
            "beamsteer_refit_failures_total", "Refits that failed and kept the old model",
            registry=r)
        self.measurements = Counter(
            "beamsteer_measurements_total", "Measurements stored (repeats excluded)", registry=r)
        self.suggestions = Counter(
            "beamsteer_suggestions_total", "Suggestions handed out", registry=r)
        self.asks_prepared = Counter(
            "beamsteer_asks_prepared_total",
            "Next asks whose picks were computed while the last suggestions were measured",
            registry=r)
        self.suggestions_ahead = Counter(
            "beamsteer_suggestions_ahead_total",
            "Suggestions an ask took from the picks prepared for it (the rest: computed then)",
            registry=r)
        self.expired = Counter(
            "beamsteer_suggestions_expired_total", "Pending suggestions that expired", registry=r)
        self.http_requests = Counter(
            "beamsteer_http_requests_total", "HTTP requests by route and status class",
            ["method", "route", "status"], registry=r)
        self.websockets = Gauge(
            "beamsteer_websockets", "Open event websockets", registry=r)
        self.engines = Gauge("beamsteer_engines", "GP engines held in memory", registry=r)
        self.inference = InferenceMetrics(r)


# Inference: ~1 ms (a warm GPU batch) to the 30 s default deadline.
_INFER = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class InferenceMetrics:
    """Per model and version, in the spirit of Triton's ``nv_inference_*``."""

    def __init__(self, r: CollectorRegistry) -> None:
        mv = ["model", "version"]
        self.requests = Counter(
            "beamsteer_inference_requests_total",
            "Inference jobs by outcome: success, queue_full, expired, failed, dead_lettered, "
            "unavailable",
            [*mv, "outcome"], registry=r)
        self.queue_seconds = Histogram(
            "beamsteer_inference_queue_seconds", "Time from enqueue to the start of compute",
            mv, buckets=_INFER, registry=r)
        self.compute_seconds = Histogram(
            "beamsteer_inference_compute_seconds", "Forward pass of the batch a job ran in",
            mv, buckets=_INFER, registry=r)
        self.request_seconds = Histogram(
            "beamsteer_inference_request_seconds", "End to end: enqueue to result in the API",
            mv, buckets=_INFER, registry=r)
        self.batch_size = Histogram(
            "beamsteer_inference_batch_size", "Size of the micro-batch each job ran in",
            mv, buckets=_BATCH, registry=r)
        self.queue_depth = Gauge(
            "beamsteer_inference_queue_depth", "Jobs not finished (queued or in progress)", mv,
            registry=r)
        self.pending = Gauge(
            "beamsteer_inference_pending", "Jobs delivered to a worker and not yet answered",
            mv, registry=r)
        self.dead_lettered = Gauge(
            "beamsteer_inference_dead_lettered", "Jobs in the dead-letter record", mv,
            registry=r)
        self.ready = Gauge(
            "beamsteer_inference_model_ready", "1 when a warm worker serves the model", mv,
            registry=r)
