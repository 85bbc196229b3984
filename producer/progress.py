"""What a submitted job is doing now, for ``wincert ... --wait`` on a terminal.

Read-only view of two things the worker writes: the Celery task state in the result backend
(``PENDING`` queued or unknown, ``STARTED``, ``RETRY``, ``SUCCESS``, ``FAILURE``; the worker runs
with ``task_track_started``) and the job's bookkeeping hash ``wincert:job:{job_id}`` on the
broker's Redis (:mod:`worker.state`: ``attempts``, ``waits``, ``transient``, ``granted``; a
contract test keeps the key and field names in step).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import redis

JOB_STATE_KEY = "wincert:job:{job_id}"
"""The worker's per-job bookkeeping hash (``worker.state``)."""


class Phase(StrEnum):
    """Where a job is, as far as a producer can tell."""

    QUEUED = "queued"
    WAITING_FOR_SLOT = "waiting for a host slot"
    RUNNING = "running"
    RETRYING = "retrying after a transient error"
    FINISHED = "finished"


@dataclass(frozen=True)
class JobProgress:
    """A snapshot of one job's progress.

    ``attempts``: executions so far (slot-wait re-publishes included; 0 while queued);
    ``slot_waits``: times the host had no free slot; ``transient_retries``: retries after
    ``host_unreachable`` / ``timeout``.
    """

    phase: Phase
    attempts: int = 0
    slot_waits: int = 0
    transient_retries: int = 0

    def describe(self) -> str:
        """One line for a terminal, e.g. ``waiting for a host slot (attempt 2, 1 wait)``."""
        if self.phase in (Phase.QUEUED, Phase.FINISHED) or self.attempts == 0:
            return self.phase.value
        extra = f"attempt {self.attempts}"
        if self.slot_waits:
            extra += f", {self.slot_waits} slot wait{'s' if self.slot_waits != 1 else ''}"
        if self.transient_retries:
            retries = self.transient_retries
            extra += f", {retries} transient retr{'ies' if retries != 1 else 'y'}"
        return f"{self.phase.value} ({extra})"


def _int(value: str | bytes | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0  # anything read from Redis is untrusted: a bad field reads as zero


def job_progress(client: redis.Redis, job_id: uuid.UUID, task_state: str) -> JobProgress:
    """The progress of ``job_id`` given its Celery ``task_state`` (``AsyncResult.state``).

    Raises:
        redis.exceptions.RedisError: Redis is unreachable.
    """
    if task_state in ("SUCCESS", "FAILURE"):
        return JobProgress(Phase.FINISHED)
    fields = client.hmget(JOB_STATE_KEY.format(job_id=job_id), ["attempts", "waits", "transient", "granted"])
    attempts, waits, transient = (_int(v) for v in fields[:3])
    granted = fields[3] is not None
    if attempts == 0:
        return JobProgress(Phase.QUEUED)
    if not granted:
        phase = Phase.WAITING_FOR_SLOT
    elif task_state == "STARTED":
        phase = Phase.RUNNING
    else:  # RETRY, or PENDING again: re-queued after the slot was held once
        phase = Phase.RETRYING if transient else Phase.WAITING_FOR_SLOT
    return JobProgress(phase, attempts, waits, transient)
