"""Per-job bookkeeping in Redis: delivery counts, slot waits, transient retries, the final result.

One hash per job, ``wincert:job:{job_id}`` (expires after :data:`STATE_TTL_SECONDS` idle):

=================  ============================================================================
``attempts``       executions of any message of this job (slot-wait re-publishes included)
``d:<retries>``    deliveries of the message with Celery retry number ``<retries>``: a message
                   re-queued because its worker died (``task_reject_on_worker_lost``) or
                   redelivered after the visibility timeout comes back with the same number,
                   so this counts redeliveries without counting deliberate re-publishes
``first_ms``       Redis time of the first execution (slot wait deadline, wait metric)
``waits``          slot-wait re-publishes
``transient``      retries after host_unreachable / timeout
``granted``        set when the first slot was granted (the wait metric is observed once)
=================  ============================================================================

The final result is kept at ``wincert:job:{job_id}:result`` (``result_expires``), so a late
duplicate delivery returns it instead of running the job again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

STATE_TTL_SECONDS = 7 * 24 * 3600


def _key(job_id: str) -> str:
    return f"wincert:job:{job_id}"


@dataclass(frozen=True)
class Delivery:
    """What the job's state says at the start of one execution."""

    attempts: int
    deliveries: int
    """Deliveries of this very message (1 on the first)."""
    waited_seconds: float
    """Seconds since the job's first execution (Redis clock)."""
    stored_result: str | None
    """The final JobResult JSON if the job already finished."""


class JobState:
    """Bookkeeping for one job (see the module docstring)."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.key = _key(job_id)

    def _now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def start(self, retries: int) -> Delivery:
        """Record one execution of the message with Celery retry number ``retries``."""
        now = self._now_ms()
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self.key, "attempts", 1)
        pipe.hincrby(self.key, f"d:{retries}", 1)
        pipe.hsetnx(self.key, "first_ms", now)
        pipe.hget(self.key, "first_ms")
        pipe.expire(self.key, STATE_TTL_SECONDS)
        pipe.get(f"{self.key}:result")
        replies: list[Any] = pipe.execute()
        first = int(replies[3]) if replies[3] is not None else now
        stored = replies[5]
        if isinstance(stored, bytes):
            stored = stored.decode("utf-8")
        return Delivery(int(replies[0]), int(replies[1]), max(0.0, (now - first) / 1000), stored)

    def incr(self, field: str) -> int:
        """Add one to ``field`` (``waits``, ``transient``); return the new value."""
        return int(self.client.hincrby(self.key, field, 1))

    def first_grant(self) -> bool:
        """True the first time a slot is granted to this job."""
        return bool(self.client.hsetnx(self.key, "granted", 1))

    @property
    def result_key(self) -> str:
        """Where the final result is kept for duplicate deliveries (written by
        :func:`worker.results.publish_result` together with the stream entry)."""
        return f"{self.key}:result"
