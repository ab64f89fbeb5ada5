"""Every Redis key and default of the inference queue, in one place (after arq's ``constants.py``).

All keys live under a configurable prefix (``Settings.redis_prefix``), so test runs and
deployments sharing one Redis never see each other's jobs.
"""

from __future__ import annotations

DEFAULT_VERSION = "1"
# The consumer group every worker joins; one group per stream, so each job goes to one worker.
GROUP = "workers"

# Payloads above this many bytes go to their own key (with a TTL) instead of the stream
# entry: stream entries are copied on every XREADGROUP/XAUTOCLAIM and kept in the PEL, and
# a 64x64 float32 image (16 KiB) is about where an extra GET starts to pay for itself.
INLINE_PAYLOAD_BYTES = 16 * 1024
# A reply list outlives its API process by this much, then Redis drops it.
REPLY_TTL_MS = 10 * 60 * 1000
# A payload key outlives its job's deadline by this much (a late redelivery still finds it
# and answers "expired" rather than "payload missing").
PAYLOAD_GRACE_MS = 60 * 1000
# Dead letters kept per model (the stream is trimmed approximately to this length).
DEAD_LETTER_MAXLEN = 10_000
# A worker refreshes its readiness every HEARTBEAT_S; it counts as gone after READY_TTL_S.
HEARTBEAT_S = 2.0
READY_TTL_S = 10.0


def stream_key(prefix: str, model: str, version: str) -> str:
    """The job stream of one model version."""
    return f"{prefix}:jobs:{model}:{version}"


def dead_letter_key(prefix: str, model: str, version: str) -> str:
    """Where jobs that failed or were delivered too often are recorded."""
    return f"{prefix}:dead:{model}:{version}"


def payload_key(prefix: str, job_id: str) -> str:
    """A large job payload kept out of its stream entry."""
    return f"{prefix}:payload:{job_id}"


def reply_key(prefix: str, process_id: str) -> str:
    """The reply list of one API process (workers RPUSH, the process BLPOPs)."""
    return f"{prefix}:replies:{process_id}"


def models_key(prefix: str) -> str:
    """Hash ``model:version -> JSON model description`` written by workers."""
    return f"{prefix}:models"


def ready_key(prefix: str, model: str, version: str) -> str:
    """Sorted set of worker ids serving a model, scored by their last heartbeat."""
    return f"{prefix}:ready:{model}:{version}"
