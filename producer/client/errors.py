"""The errors :class:`~producer.client.Client` raises itself (besides pydantic's ValidationError
and the Redis and Celery connection errors)."""

from __future__ import annotations

import uuid


class ProducerError(Exception):
    """Base class of the errors :class:`Client` raises itself (besides ValidationError)."""


class PlaintextSecretRefusedError(ProducerError, ValueError):
    """A secret (an inline password, a certificate file or its PKCS#12 password) would travel in
    plaintext but this producer does not allow plaintext secrets."""


class ResultTimeoutError(ProducerError, TimeoutError):
    """No result arrived within the timeout. The job may still be queued or running."""

    def __init__(self, job_id: uuid.UUID, timeout: float) -> None:
        self.job_id = job_id
        self.timeout = timeout
        super().__init__(
            f"no result for job {job_id} after {timeout:g} s; it may still be queued or running."
            f" Check later with `wincert result {job_id}` (or `--wait --timeout SECONDS`); `wincert status`"
            " shows the queue and the workers online, and a message the workers refused (not"
            " authenticated with WINCERT_SECRET_KEYS, malformed) is in `wincert dead list`"
        )


class TaskFailedError(ProducerError):
    """The task raised instead of returning a JobResult. Kept for callers that catch it: results
    are read from the worker's kept copy now, and a worker publishes an ``internal_error`` result
    for a job whose task failed, so :meth:`Client.wait` and :meth:`Client.result` no longer
    raise it."""

    def __init__(self, job_id: uuid.UUID, detail: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id} ended without a result: the task raised {detail}; see the worker log"
            " for this job id"
        )


class BackendUnavailableError(ProducerError, ConnectionError):
    """The Celery result backend could not be reached. Kept for callers that catch it: results
    are read from the broker's Redis now (its errors are ``redis.exceptions.ConnectionError``)."""


class ResultFormatError(ProducerError):
    """A stored result does not match :class:`JobResult` (producer and worker versions differ?)."""
