"""A finished job's result, from :mod:`worker.tasks`: published once (kept copy + results stream
entry, serialised once), counted, dead-lettered when it must be, and the results published
outside a running task (a job the hard time limit killed; a message the queue screen refused).

Split from :mod:`worker.tasks` (which imports these back; the Celery tasks stay there).
Shapes: ``task_id`` the Celery task id (the job id, a UUID string); the task's return value is
:func:`_summary` (``{"result_key", "job_id", "status", "code"}``), or the JobResult as JSON with
``WINCERT_CELERY_RESULT_COPY``.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery, Task
from pydantic import ValidationError

from producer import auth
from producer.codes import ResultCode
from producer.messages import JobResult, JobType, parse_job
from worker import metrics, result_json, results, signing
from worker.logging import job_context
from worker.outage import retry_redis
from worker.settings import WorkerSettings
from worker.state import JobState

if TYPE_CHECKING:
    from worker.tasks import Runtime

log = logging.getLogger("worker.tasks")  # the logger these lines always had (log filters, docs)

__all__ = ["publish_hard_timeout", "publish_invalid", "signer_allowed"]


def publish_hard_timeout(rt: Runtime, task_id: str, args: Any) -> None:
    """Publish the ``timeout`` JobResult of a job whose pool process the hard time limit killed
    (runs in the worker's main process, from Celery's ``task_failure`` signal).

    Without it the job would end with only Celery's FAILURE state and no JobResult in the
    stream. Published once (a result the job published itself wins). Redis errors are logged,
    never raised: the main process must keep consuming.
    """
    job = args[0] if isinstance(args, list | tuple) and args else None
    try:
        parsed = parse_job(job)
    except ValidationError:
        return  # an invalid job never runs long enough to meet the hard limit
    settings = rt.settings
    result = results.failure_result(
        parsed.job_id,
        JobType(parsed.job_type),
        ResultCode.TIMEOUT,
        f"the job ran longer than WINCERT_TASK_TIME_LIMIT={settings.task_time_limit:g} s on host"
        f" {parsed.store.host} and its worker process was killed (the soft limit"
        f" WINCERT_TASK_SOFT_TIME_LIMIT={settings.task_soft_time_limit:g} s did not stop it); the"
        f" host slot returns when its lease ends (WINCERT_LEASE_SECONDS={settings.lease_seconds:g}),"
        " and a command still running on the host ends with it or at the host's idle timeout",
        store=parsed.store,
    )
    try:
        results.publish_result(
            rt.redis,
            result,
            settings.results_stream_maxlen,
            keep_as=JobState(rt.redis, str(parsed.job_id)).result_key,
            expires=settings.result_expires,
            inline_bytes=settings.result_inline_bytes,
        )
    except redis.RedisError:
        log.exception("could not publish the hard time limit result of job %s", task_id)
        return
    metrics.JOBS.labels(
        job_type=result.job_type.value, store_type=parsed.store.store_type.value, status=result.status.value
    ).inc()
    log.error("job %s killed by the hard time limit; timeout result published", task_id)


def publish_invalid(app: Celery, settings: WorkerSettings, task_id: str, message: str) -> None:
    """The ``invalid_job`` result of an authenticated job whose message the queue screen refused
    (:mod:`worker.untrusted`): stored for ``task_id`` and published, as for any finished job."""
    try:
        job_id = uuid.UUID(task_id)
    except ValueError:
        return
    result = results.failure_result(job_id, JobType.INVENTORY, ResultCode.INVALID_JOB, message)
    client = settings.redis_connection.client(
        decode_responses=True, socket_timeout=30, socket_connect_timeout=10
    )
    try:
        state = JobState(client, task_id)
        results.publish_result(
            client,
            result,
            settings.results_stream_maxlen,
            keep_as=state.result_key,
            expires=settings.result_expires,
            inline_bytes=settings.result_inline_bytes,
        )
    finally:
        client.close()
    if settings.celery_result_copy:
        app.backend.store_result(task_id, result.model_dump(mode="json"), "SUCCESS")


def _callback_dead(rt: Runtime, reason: str, message: str, content: dict[str, Any]) -> dict[str, Any]:
    """Dead-letter a chained-signing callback that cannot be applied (never a silent drop)."""
    results.dead_letter(
        rt.redis,
        job=content,
        reason=reason,
        code=ResultCode.SIGNING_FAILED,
        message=message,
        attempts=0,
        worker=None,
        maxlen=rt.settings.dead_letter_stream_maxlen,
        envelope_id=str(content.get("job_id", ""))[:64],
    )
    metrics.DEAD_LETTERED.labels(reason=reason).inc()
    log.error("chained signing callback dead-lettered (%s): %s", reason, message)
    return {}


def signer_allowed(app: Celery, settings: WorkerSettings, name: str) -> bool:
    """A job may chain to signer task ``name``: it is in ``WINCERT_SIGNER_TASKS``, or it is the
    test CA (``testca.sign``) registered on this very worker (``WINCERT_TEST_CA_DIR``)."""
    return name in settings.allowed_signer_tasks or (name == "testca.sign" and name in app.tasks)


def _signing_failed(rt: Runtime, app: Celery, job: Any, detail: str, worker: str | None) -> dict[str, Any]:
    """Publish and store the ``signing_failed`` result of a chained completion job."""
    result = signing.signing_failed_result(job, detail, worker)
    returned = _finish(rt, JobState(rt.redis, str(result.job_id)), result)
    if rt.settings.celery_result_copy:  # for the completion job's id, not this callback's
        app.backend.store_result(str(result.job_id), returned, "SUCCESS")
    return returned


def _summary(result_key: str, result: JobResult | None = None) -> dict[str, Any]:
    """The task's return value: a pointer to the kept result (Celery stores none of it; the
    result is published once by :func:`_finish`). With ``WINCERT_CELERY_RESULT_COPY`` the
    return value is the JobResult itself, for producers that read Celery's backend."""
    summary: dict[str, Any] = {"result_key": result_key}
    if result is not None:
        summary.update(job_id=str(result.job_id), status=result.status.value, code=result.code.value)
    return summary


def _publication(rt: Runtime, state: JobState, result: JobResult) -> results.Publication:
    """The final result, serialised once, ready to publish (:func:`worker.results.prepare`)."""
    return results.prepare(
        rt.redis,
        result,
        rt.settings.results_stream_maxlen,
        keep_as=state.result_key,
        expires=rt.settings.result_expires,
        inline_bytes=rt.settings.result_inline_bytes,
        payload=result_json.serialise(result),
    )


def _finish(
    rt: Runtime,
    state: JobState,
    result: JobResult,
    ran: bool = False,
    publication: results.Publication | None = None,
) -> dict[str, Any]:
    """Publish the final result once (kept copy + stream entry, serialised once), count it,
    return the task's small return value (:func:`_summary`).

    ``ran``: the job ran against its host (its duration goes into the histogram).
    ``publication``: the result prepared before (:func:`_publication`), possibly published
    already with the job's inventory state write (then nothing is sent here).
    """
    prepared = publication if publication is not None else _publication(rt, state, result)
    retry_redis(prepared.publish, rt.settings.redis_retry_seconds, "publish the result")
    store_type = result.store_type.value if result.store_type else "unknown"
    metrics.JOBS.labels(
        job_type=result.job_type.value,
        store_type=store_type,
        status=result.status.value,
        code=result.code.value,
    ).inc()
    if ran and result.duration_seconds is not None:
        metrics.JOB_DURATION.labels(job_type=result.job_type.value, store_type=store_type).observe(
            result.duration_seconds
        )
    log.info("job finished: %s / %s: %s", result.status.value, result.code.value, result.message)
    if rt.settings.celery_result_copy:  # the return value is Celery's copy (AsyncResult readers)
        copy: dict[str, Any] = result.model_dump(mode="json")
        return copy
    return _summary(state.result_key, result)


def _dead(
    rt: Runtime, task: Task[Any, Any], job: Any, state: JobState, result: JobResult, reason: str
) -> dict[str, Any]:
    results.dead_letter(
        rt.redis,
        job=job,
        reason=reason,
        code=result.code,
        message=result.message,
        attempts=result.attempts,
        worker=task.request.hostname,
        maxlen=rt.settings.dead_letter_stream_maxlen,
        # the screen let this message through: a producer authenticated it (replayable)
        mac_keys=auth.mac_keys(keys) if (keys := rt.settings.secret_keys_text) else None,
    )
    metrics.DEAD_LETTERED.labels(reason=reason).inc()
    log.error("job dead-lettered (%s): %s", reason, result.message)
    return _finish(rt, state, result)


def _invalid(rt: Runtime, task: Task[Any, Any], job: Any, exc: ValidationError) -> dict[str, Any]:
    job_id, job_type = results.job_identity(job, task.request.id)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'job'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)[:10]
    )
    result = results.failure_result(
        job_id,
        job_type,
        ResultCode.INVALID_JOB,
        f"the job is invalid: {problems}",
        worker=task.request.hostname,
    )
    with job_context(job_id=str(job_id)):
        # kept under the job id like any result (Client.wait finds it); published once
        return _dead(rt, task, job, JobState(rt.redis, str(job_id)), result, "invalid_job")
