"""What a submitted job is doing now, for ``wincert ... --wait`` on a terminal.

Read-only view of what the worker writes on the broker's Redis (:mod:`worker.state`; a contract
test keeps the key and field names in step): the job's bookkeeping hash
``wincert:job:{job_id}`` (``attempts``, ``waits``, ``transient``, ``phase``) and its kept result
``wincert:job:{job_id}:result`` (present: finished).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from producer import result_store

JOB_STATE_KEY = "wincert:job:{job_id}"
"""The worker's per-job bookkeeping hash (``worker.state``)."""


class Phase(StrEnum):
    """Where a job is, as far as a producer can tell."""

    QUEUED = "queued"
    WAITING_FOR_SLOT = "waiting for a host slot"
    RUNNING = "running"
    RETRYING = "retrying after a transient error"
    FINISHED = "finished"


_WORKER_PHASES = {
    "waiting": Phase.WAITING_FOR_SLOT,
    "requeued": Phase.WAITING_FOR_SLOT,
    "running": Phase.RUNNING,
    "retrying": Phase.RETRYING,
}
"""The hash's ``phase`` values (``worker.state.Phase``) as producer phases."""


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


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _read(client: redis.Redis, job_id: uuid.UUID) -> tuple[bool, list[Any]]:
    pipe = client.pipeline(transaction=False)
    pipe.exists(result_store.result_key(job_id))
    pipe.hmget(JOB_STATE_KEY.format(job_id=job_id), ["attempts", "waits", "transient", "granted", "phase"])
    finished, fields = pipe.execute(raise_on_error=False)
    for reply in (finished, fields):
        # WRONGTYPE (a key not written by a worker: untrusted) reads as nothing recorded;
        # connection errors are raised by execute() itself
        if isinstance(reply, redis.exceptions.ResponseError) and not str(reply).startswith("WRONGTYPE"):
            raise reply
    if isinstance(fields, redis.exceptions.ResponseError):
        fields = [None] * 5
    return finished is True or (isinstance(finished, int) and finished > 0), list(fields)


def _progress(finished: bool, fields: list[Any]) -> JobProgress:
    if finished:
        return JobProgress(Phase.FINISHED)
    attempts, waits, transient = (_int(v) for v in fields[:3])
    if attempts == 0:
        return JobProgress(Phase.QUEUED)
    phase = _WORKER_PHASES.get(_text(fields[4]))
    if phase is None:  # written by an older worker (no phase): the slot tells
        phase = Phase.WAITING_FOR_SLOT if fields[3] is None else Phase.RUNNING
    return JobProgress(phase, attempts, waits, transient)


def job_progress(client: redis.Redis, job_id: uuid.UUID, task_state: str | None = None) -> JobProgress:
    """The progress of ``job_id``: one round trip (``EXISTS`` of the kept result, ``HMGET`` of
    the hash). ``task_state``: a state already known (``SUCCESS`` / ``FAILURE`` short-cut to
    finished; other values are ignored: the hash's ``phase`` tells).

    Raises:
        redis.exceptions.RedisError: Redis is unreachable.
    """
    if task_state in ("SUCCESS", "FAILURE"):
        return JobProgress(Phase.FINISHED)
    return _progress(*_read(client, job_id))


def task_state(client: redis.Redis, job_id: uuid.UUID) -> str:
    """A Celery-style state from the worker's records (one round trip): ``SUCCESS`` (the result
    is kept), ``STARTED`` (a worker process holds the job: waiting for a slot or running),
    ``RETRY`` (re-published: slot wait or transient retry), ``PENDING`` (queued, or unknown).

    Raises:
        redis.exceptions.RedisError: Redis is unreachable.
    """
    finished, fields = _read(client, job_id)
    progress = _progress(finished, fields)
    if progress.phase is Phase.FINISHED:
        return "SUCCESS"
    if progress.phase is Phase.QUEUED:
        return "PENDING"
    return "RETRY" if _text(fields[4]) in ("requeued", "retrying") else "STARTED"
