"""One settings object for the service: environment variables with prefix ``BEAMSTEER_``.

Every knob has a safe default: ``beamsteer serve`` with nothing set runs on an SQLite file
in ``./data``, an in-process queue and the CPU, bound to loopback only.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration (env prefix ``BEAMSTEER_``, e.g. ``BEAMSTEER_DATABASE_URL``)."""

    model_config = SettingsConfigDict(env_prefix="BEAMSTEER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/beamsteer.db")
    redis_url: str | None = Field(None, description="Redis for the inference queue (optional)")
    redis_prefix: str = "beamsteer"

    # Inference queue: "memory" runs jobs in this process; "redis" hands them to
    # `beamsteer worker` processes (default: redis when redis_url is set, else memory).
    queue_backend: Literal["memory", "redis"] | None = None
    # Jobs a model's queue may hold before requests get 429. At ~1-10 ms per image on a GPU,
    # 1000 is seconds of work: more only adds latency callers would time out on.
    event_relay: Literal["none", "redis"] | None = Field(
        None, description="Share websocket events between API processes "
                          "(default: redis when redis_url is set)")
    queue_max_depth: int = Field(1000, ge=1)
    inference_timeout_s: float = Field(30.0, gt=0, description="Default deadline of a request")
    # Models of the in-process worker: "name,name=checkpoint.pt"; empty = every shipped one.
    inference_models: str = ""
    embedded_worker: bool | None = Field(
        None, description="Run a worker inside the API process (default: with the memory queue)")
    inference_device: str = "auto"
    worker_max_batch: int = Field(32, ge=1)
    worker_max_delay_ms: float = Field(5.0, ge=0)
    # A job held this long by a worker is taken over by another (the holder is presumed
    # dead); must exceed the slowest batch's compute time.
    claim_idle_ms: int = Field(30_000, ge=1)
    max_deliveries: int = Field(3, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    # Pending suggestions expire so that a crashed beamline does not block a region forever.
    # One hour covers a slow raster of a batch; a spec may set its own.
    suggestion_ttl_s: float = Field(3600.0, gt=0)
    ask_lock_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for an experiment's ask lock before a 503")
    # PostgreSQL that stops answering without closing connections (a stopped process, a
    # network black hole) would hold a request forever: a query or COMMIT without an answer
    # for this long has its connection shut down, and the request gets 503 (502 for a
    # COMMIT: it may have been stored). Our queries take milliseconds; the ask lock's wait
    # (ask_lock_timeout_s) comes on top and migrations are exempt. 0 turns the limit off.
    store_timeout_s: float = Field(
        15.0, ge=0, description="Longest wait for PostgreSQL's answer to one query or "
                                "COMMIT before a 503/502 (0: no limit)")
    expiry_interval_s: float = Field(5.0, gt=0)
    # Bodies beyond this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_batch_measurements: int = Field(1000, ge=1)
    max_suggestions: int = Field(100, ge=1)
    max_posterior_points: int = Field(250_000, ge=1)
    # Security (README, "Security"). Without any API key every caller may do everything,
    # which is why a server without keys binds only to loopback unless told `insecure`.
    insecure: bool = Field(False, description="allow binding beyond loopback with no API keys")
    # Seconds a key lookup (and "are there keys at all") is cached: the delay before a
    # revocation or a first key takes effect.
    auth_cache_s: float = Field(2.0, ge=0, le=60)
    # Requests per second per API key (per client address when anonymous), with bursts of
    # `rate_limit_burst`. A beamline's ask/tell loop makes a few per second and a dashboard
    # a handful per refresh: these only stop a runaway script. 0 turns the limit off.
    rate_limit_per_s: float = Field(200.0, ge=0)
    rate_limit_burst: int = Field(400, ge=1)
    # Open websockets (dashboards, event followers) at once; past it a new one is closed
    # with 1013 ("try again later"). Each costs a task and a small event queue.
    max_websockets: int = Field(1000, ge=1)
    # Threads for torch inside the API process. One thread per GP op was the steady choice on
    # 2-core machines (two spun OpenMP barriers against each other, DESIGN.md); raise it on
    # bigger hosts.
    torch_threads: int = Field(1, ge=1)
    # Worker threads for the GP work (asks, posteriors) and for refits.
    compute_threads: int = Field(2, ge=1)
    refit_threads: int = Field(1, ge=1)
    # After an ask, compute the next ask's picks while its suggestions are measured, on one
    # low-priority thread (GPEngine.prepare): the next ask then only stores them (for which
    # acquisitions and states: engine.AHEAD_ACQUISITIONS / AHEAD_CHECKED); off: every ask
    # computes its own.
    lookahead: bool = True
    # ... only when a loop's measuring time (an ask's reply to the next tell) is at least
    # this many times an ask's own computation (0: after every ask; a second thread then
    # fights back-to-back asks for the GIL and the cores). An ask that comes while its
    # picks are still being prepared waits for them (SteeringService._join_prepare).
    lookahead_room: float = Field(1.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and v.split(":", 1)[0].split("+", 1)[0] not in ("sqlite", "postgresql"):
            raise ValueError("database_url must be sqlite:///... or postgresql://...")
        return v

    @property
    def exposed(self) -> bool:
        """Whether ``host`` reaches beyond this machine (anything but a loopback address)."""
        return not is_loopback(self.host)

    @property
    def queue_name(self) -> str:
        """The queue backend in use."""
        return self.queue_backend or ("redis" if self.redis_url else "memory")

    @property
    def event_relay_name(self) -> str:
        """How events reach the other API processes: ``redis`` or ``none``."""
        return self.event_relay or ("redis" if self.redis_url else "none")

    @property
    def runs_embedded_worker(self) -> bool:
        """Whether the API process runs its own inference worker."""
        if self.embedded_worker is None:
            return self.queue_name == "memory"
        return self.embedded_worker

    @property
    def store_url(self) -> str:
        """The database URL in use: ``database_url`` or the SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'beamsteer.db').resolve()}"


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect. ``0.0.0.0``,
    ``::``, other addresses and other names: not (a name may resolve anywhere)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
