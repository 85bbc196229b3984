"""Reading results where workers keep them: the kept copy (``wincert:job:<job_id>:result``) and
the results stream (:data:`~producer.messages.RESULTS_STREAM`), on the broker's Redis."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

import redis
from pydantic import ValidationError

from producer import progress, result_store
from producer.client.connections import open_redis
from producer.client.errors import ResultFormatError, ResultTimeoutError
from producer.messages import RESULTS_STREAM, JobResult
from producer.settings import ProducerSettings

log = logging.getLogger(__name__)

_STREAM_SCAN_BATCH = 500
_MAX_BLOCK_MS = 20_000
_FIRST_POLL_SECONDS = 0.05
_MAX_POLL_SECONDS = 0.5


def _as_uuid(job_id: uuid.UUID | str) -> uuid.UUID:
    return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))


class ResultReading:
    """The result-reading half of :class:`~producer.client.Client`: task state, waiting for and
    reading one job's result, following the results stream. Reads ``settings`` and keeps its
    redis-py client in ``_redis`` (opened on first use; the client closes it)."""

    settings: ProducerSettings
    _redis: redis.Redis | None

    # --- results ---------------------------------------------------------------------------

    def task_state(self, job_id: uuid.UUID | str) -> str:
        """A Celery-style state of the job from what the worker records
        (:func:`producer.progress.task_state`): ``SUCCESS`` (its result is kept), ``STARTED``
        (a worker holds it), ``RETRY`` (re-published: slot wait or transient retry), ``PENDING``
        (queued, or unknown); never blocks.

        Raises:
            redis.exceptions.ConnectionError: Redis is unreachable.
            ValueError: ``job_id`` is not a UUID.
        """
        return progress.task_state(self.redis, _as_uuid(job_id))

    @staticmethod
    def _to_result(job_id: uuid.UUID, text: str | bytes) -> JobResult:
        try:
            result = JobResult.model_validate_json(text)
        except ValidationError as exc:
            raise ResultFormatError(
                f"the stored result of job {job_id} is not a valid JobResult ({exc.error_count()}"
                f" errors, first: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); are producer"
                " and worker the same version?"
            ) from exc
        return result

    def _kept(self, job_id: uuid.UUID) -> JobResult | None:
        """The job's kept result (:func:`result_store.result_key`), or None."""
        key = result_store.result_key(job_id)
        try:
            raw: Any = self.redis.get(key)
        except UnicodeDecodeError:  # untrusted bytes: not what a worker writes
            raise ResultFormatError(f"the stored result of job {job_id} is not UTF-8 text") from None
        except redis.exceptions.ResponseError as exc:  # WRONGTYPE: not what a worker writes
            if not str(exc).startswith("WRONGTYPE"):
                raise
            raise ResultFormatError(
                f"the stored result of job {job_id} is not a string key (a Redis writer other than"
                f" a worker wrote {key})"
            ) from None
        if raw is None:
            return None
        try:
            text = result_store.decode(raw)
        except result_store.StoredResultError as exc:
            raise ResultFormatError(f"the stored result of job {job_id} is unreadable: {exc}") from None
        return self._to_result(job_id, text)

    def wait(self, job_id: uuid.UUID | str, timeout: float = 60.0) -> JobResult:
        """Block until the job's result is kept; return it.

        Polls the kept result (``GET wincert:job:<job_id>:result``: every 50 ms at first, then
        less often, at most every 0.5 s).

        Args:
            job_id: The job id (UUID or its text).
            timeout: Seconds to wait (> 0).

        Raises:
            ResultTimeoutError: no result within ``timeout`` (the stream is checked once more
                before giving up). The job may still finish; ``wincert result`` reads it later.
            ResultFormatError: the stored result is not a JobResult.
            redis.exceptions.ConnectionError: Redis is unreachable.
            ValueError: ``job_id`` is not a UUID, or ``timeout`` is not a finite positive number
                of seconds (``nan`` would never time out, ``inf`` would wait forever).
        """
        job_uuid = _as_uuid(job_id)
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        deadline = time.monotonic() + timeout
        pause = _FIRST_POLL_SECONDS
        while True:
            found = self._kept(job_uuid)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            pause = min(pause * 1.5, _MAX_POLL_SECONDS)
        from_stream = self._result_from_stream(job_uuid)
        if from_stream is not None:
            return from_stream
        raise ResultTimeoutError(job_uuid, timeout)

    def result(self, job_id: uuid.UUID | str) -> JobResult | None:
        """The job's result if it is available now, else ``None``; never blocks.

        Reads the kept result first, then scans :data:`RESULTS_STREAM` from the newest entry
        back (O(stream length) when the job has no entry there).

        Raises:
            ResultFormatError: the stored result is not a JobResult.
            redis.exceptions.ConnectionError: Redis is unreachable.
            ValueError: ``job_id`` is not a UUID.
        """
        job_uuid = _as_uuid(job_id)
        found = self._kept(job_uuid)
        if found is not None:
            return found
        return self._result_from_stream(job_uuid)

    # --- results stream --------------------------------------------------------------------

    @property
    def redis(self) -> redis.Redis:
        """The redis-py client (``decode_responses=True``) on ``settings.broker_url``."""
        if self._redis is None:
            self._redis = open_redis(self.settings)
        return self._redis

    def entry_result(self, stream_id: str, fields: Mapping[str, str]) -> JobResult | None:
        """The JobResult of a stream entry: inline (``result``) or by reference (``result_key``:
        read from the kept copy; ``None`` with a warning when it expired or is invalid)."""
        text = fields.get("result")
        if text is not None:
            try:
                return JobResult.model_validate_json(text)
            except ValidationError as exc:
                log.warning("results stream entry %s is not a JobResult (%s); skipped", stream_id, exc)
                return None
        key = fields.get("result_key")
        try:
            job_id = uuid.UUID(str(fields.get("job_id")))
        except ValueError:
            job_id = None
        if key is None or job_id is None or key != result_store.result_key(job_id):
            log.warning("results stream entry %s has no 'result' and no valid reference; skipped", stream_id)
            return None
        try:
            found = self._kept(job_id)
        except ResultFormatError as exc:
            log.warning("results stream entry %s: %s; skipped", stream_id, exc)
            return None
        if found is None:
            log.warning(
                "results stream entry %s refers to %s, which expired (WINCERT_RESULT_EXPIRES); skipped",
                stream_id,
                key,
            )
        return found

    def _result_from_stream(self, job_id: uuid.UUID) -> JobResult | None:
        wanted = str(job_id)
        upper = "+"
        while True:
            batch = cast(
                list[tuple[str, dict[str, str]]],
                self.redis.xrevrange(RESULTS_STREAM, max=upper, min="-", count=_STREAM_SCAN_BATCH),
            )
            for stream_id, fields in batch:
                if fields.get("job_id") != wanted and wanted not in fields.get("result", ""):
                    continue  # cheap filter before parsing
                result = self.entry_result(stream_id, fields)
                if result is not None and result.job_id == job_id:
                    return result
            if len(batch) < _STREAM_SCAN_BATCH:
                return None
            upper = "(" + batch[-1][0]

    def iter_results(
        self, from_id: str = "$", block_ms: int = 5000, *, stop_when_idle: bool = False
    ) -> Iterator[tuple[str, JobResult]]:
        """Yield ``(stream_id, JobResult)`` for each entry of :data:`RESULTS_STREAM`, in order.

        Args:
            from_id: ``"$"`` for entries added after the call, ``"0"`` for the whole stream, or
                a stream id (``"1718000000000-0"``) to resume after that entry (exclusive).
            block_ms: Milliseconds each XREAD blocks waiting for new entries (> 0).
            stop_when_idle: Stop when one XREAD returns nothing; otherwise follow forever.

        Entries without a valid ``result`` field are logged and skipped. ``"$"`` is resolved
        to the stream's last id once at the start, so no entry is missed between reads.

        Raises:
            redis.exceptions.ConnectionError: Redis is unreachable (at the call when ``from_id``
                is ``"$"``, else at the first ``next()``).
            ValueError: ``block_ms`` is not positive.
        """
        if block_ms <= 0:
            raise ValueError(f"block_ms must be > 0 milliseconds, got {block_ms}")
        start = from_id
        if from_id == "$":
            # Resolve now (not at the first next()), so "after the call" means what it says and
            # no entry is lost between two blocking reads.
            newest = cast(list[tuple[str, dict[str, str]]], self.redis.xrevrange(RESULTS_STREAM, count=1))
            start = newest[0][0] if newest else "0-0"
        return self._follow(start, block_ms, stop_when_idle)

    def _follow(self, last_id: str, block_ms: int, stop_when_idle: bool) -> Iterator[tuple[str, JobResult]]:
        while True:
            response = cast(
                list[tuple[str, list[tuple[str, dict[str, str]]]]],
                self.redis.xread({RESULTS_STREAM: last_id}, block=min(block_ms, _MAX_BLOCK_MS), count=100),
            )
            if not response:
                if stop_when_idle:
                    return
                continue
            for _stream, entries in response:
                for stream_id, fields in entries:
                    last_id = stream_id
                    result = self.entry_result(stream_id, fields)
                    if result is not None:
                        yield stream_id, result
