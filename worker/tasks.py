"""The Celery task every job is sent to: ``wincert.run_job(job: dict) -> dict``.

Thin by design; each step lives in its own module:

1. parse the payload (:func:`producer.messages.parse_job`); invalid → ``invalid_job`` result
   and a dead letter, never an exception loop;
2. count the delivery (:mod:`worker.state`); over ``WINCERT_MAX_DELIVERIES`` → dead letter; a
   job that already finished returns its stored result;
3. take a host slot (:mod:`worker.limits`): if the host is busy, wait in this process (woken
   when a slot frees) up to ``WINCERT_SLOT_BLOCK_SECONDS`` if fewer than the host's waiter bound
   already wait; else ``self.retry`` with a jittered countdown and ``max_retries=None`` (slot
   waits never use up a failure budget) until ``WINCERT_SLOT_WAIT_DEADLINE_SECONDS`` →
   ``slot_deadline_exceeded``;
4. run the job (:func:`worker.jobs.run` → ``worker.jobs.HANDLERS[(job_type, store_type)]``)
   while a lease thread renews the slot; release it in ``finally``;
5. retry ``host_unreachable`` / ``timeout`` up to ``WINCERT_TRANSIENT_RETRIES`` times;
6. publish (:mod:`worker.task_results` → :mod:`worker.results`) and count (:mod:`worker.metrics`).

The producer sends with ``task_id = str(job_id)``. The tasks ignore their results (Celery's
backend holds nothing of them): the final JobResult is kept once under
``wincert:job:<job_id>:result`` with its results stream entry (:mod:`worker.results`), and the
task returns only a pointer to it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, worker_process_shutdown, worker_shutdown
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from producer.codes import ResultCode
from producer.messages import TASK_NAME, AnyJob, InventoryJob, JobResult, JobType, Status, StoreRef, parse_job
from worker import affinity, inventory_state, jobs, journal, metrics, results, signing
from worker.credentials import CredentialResolver
from worker.jobs.outcome import Outcome
from worker.limits import HostLimiter, limit_key, retry_delay
from worker.limits import Outcome as SlotOutcome
from worker.logging import job_context
from worker.outage import TRANSIENT_REDIS_ERRORS, RedisOutageError, retry_redis
from worker.remote.budget import ShellBudget
from worker.remote.errors import TRANSIENT_CODES
from worker.remote.pool import SessionPool, close_all_pools
from worker.remote.session import SessionFactory, SessionOptions, make_session_factory
from worker.settings import WorkerSettings
from worker.state import JobState, Phase
from worker.task_results import (
    _callback_dead,
    _dead,
    _finish,
    _invalid,
    _publication,
    _signing_failed,
    _summary,
    publish_hard_timeout,
    signer_allowed,
)
from worker.task_results import publish_invalid as publish_invalid  # worker.app imports it here

log = logging.getLogger(__name__)

_REDIS_DOWN: tuple[type[Exception], ...] = (RedisOutageError, OperationalError, *TRANSIENT_REDIS_ERRORS)
"""Redis (state or broker) unreachable: the message is re-queued, never acked without a result."""
_PASS_THROUGH: tuple[type[BaseException], ...] = (Retry, SoftTimeLimitExceeded, *_REDIS_DOWN)


def _count_session(store: StoreRef) -> None:
    if store.is_local:  # a local PowerShell process: no WinRM protocol, no authentication
        metrics.SESSIONS_OPENED.labels(protocol="local", auth="none").inc()
    else:
        metrics.SESSIONS_OPENED.labels(protocol=store.protocol.value, auth=store.auth.value).inc()


def _count_reuse(store: StoreRef) -> None:
    metrics.SESSIONS_REUSED.labels(protocol=store.protocol.value).inc()


@worker_process_shutdown.connect(dispatch_uid="wincert-close-sessions")
@worker_shutdown.connect(dispatch_uid="wincert-close-sessions-main")
def _close_sessions(**_: Any) -> None:
    """Close this process's idle pooled WinRM sessions (prefork children; solo/threads pools)."""
    close_all_pools()


@dataclass
class Runtime:
    """Per-process resources of the task, created on first use (after the pool forks)."""

    settings: WorkerSettings
    session_factory: SessionFactory | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _redis: redis.Redis | None = None
    _limiter: HostLimiter | None = None
    _credentials: CredentialResolver | None = None
    _affinity: affinity.Affinity | None = None

    def __post_init__(self) -> None:
        if self.session_factory is None:
            options = SessionOptions(
                ca_bundle=self.settings.ca_bundle,
                connection_timeout=self.settings.connection_timeout,
                read_timeout=self.settings.read_timeout,
                operation_timeout=self.settings.operation_timeout,
                local_powershell=self.settings.local_powershell_argv,
                call_timeout=self.settings.task_soft_time_limit,
                session_idle_seconds=self.settings.session_idle_seconds,
                session_max_age_seconds=self.settings.session_max_age_seconds,
                session_pool_size=self.settings.effective_session_pool_size,
                session_pool_memory_kib=self.settings.session_pool_memory_mib * 1024,
                session_max_commands=self.settings.session_max_commands,
                ssh_known_hosts=self.settings.ssh_known_hosts,
                ssh_trust_on_first_use=self.settings.ssh_trust_on_first_use,
                ssh_subsystem=self.settings.ssh_subsystem,
            )
            self.session_factory = make_session_factory(
                options, on_open=_count_session, on_reuse=_count_reuse
            )

    @property
    def redis(self) -> redis.Redis:
        with self._lock:
            if self._redis is None:
                self._redis = self.settings.redis_connection.client(decode_responses=True)
            return self._redis

    @property
    def limiter(self) -> HostLimiter:
        client = self.redis
        with self._lock:
            if self._limiter is None:
                self._limiter = HostLimiter(client, self.settings.lease_seconds)
                pool = getattr(self.session_factory, "pool", None)
                if isinstance(pool, SessionPool) and pool.budget is None:
                    # idle pooled sessions hold their host's slots (worker/remote/budget.py)
                    pool.budget = ShellBudget(self._limiter, pool.idle_seconds)
            return self._limiter

    def idle_tokens(self, host: str, store: StoreRef) -> tuple[str, ...]:
        """This process's idle sessions to ``host`` a job for ``store`` could use (their slot
        tokens), for ``acquire``."""
        pool = getattr(self.session_factory, "pool", None)
        return pool.idle_tokens(host, store) if isinstance(pool, SessionPool) else ()

    def slot_waiters(self, host: str) -> int:
        """How many jobs may wait for ``host`` (``WINCERT_SLOT_WAITERS_PER_HOST``); for a job of a
        process whose session to the host was just closed for a waiting job
        (:meth:`~worker.remote.pool.SessionPool.yielded_to_waiters`), that plus the host's limit:
        it joins even a full line (the waiter its session went to is leaving it) instead of
        re-publishing itself with a delay, which could leave the host's slots idle at the end of
        a burst. At most ``limit`` sessions are handed over at once (one per slot), so the line
        grows past its bound by at most that, for as long as the hand-overs take."""
        capacity = self.settings.slot_waiters_for(host)
        pool = getattr(self.session_factory, "pool", None)
        if isinstance(pool, SessionPool) and pool.yielded_to_waiters(host):
            return capacity + self.settings.limit_for(host)
        return capacity

    def register_affinity(self, task: Task[Any, Any]) -> None:
        """Session affinity (:mod:`worker.affinity`): make this process's idle sessions findable
        as its node's (once per process; a heartbeat thread refreshes it)."""
        pool = getattr(self.session_factory, "pool", None)
        node = getattr(task.request, "hostname", None)
        if not self.settings.session_affinity or not isinstance(pool, SessionPool) or not node:
            return
        client, limiter = self.redis, self.limiter
        with self._lock:
            if self._affinity is None:
                self._affinity = affinity.Affinity(
                    client, self.settings.queue, self.settings.session_affinity_max_queued, pool
                )
        if pool.budget is not None and limiter is not None:
            self._affinity.register_owner(str(node), pool.budget.owner)

    @property
    def credentials(self) -> CredentialResolver:
        with self._lock:
            if self._credentials is None:
                self._credentials = CredentialResolver(self.settings)
            return self._credentials


def register(
    app: Celery, settings: WorkerSettings, session_factory: SessionFactory | None = None
) -> Task[Any, Any]:
    """Register ``wincert.run_job`` on ``app`` with its own :class:`Runtime`; return the task."""
    runtime = Runtime(settings, session_factory)

    # max_retries=None on the task: retry(max_retries=None) alone falls back to the default of 3
    # ignore_result: the job keeps its result itself, once (worker/results.py); Celery's backend
    # would hold a second copy and cost ~5 Redis commands per job (WINCERT_CELERY_RESULT_COPY)
    ignore = not settings.celery_result_copy

    @app.task(name=TASK_NAME, bind=True, shared=False, max_retries=None, ignore_result=ignore)
    def run_job(self: Task[Any, Any], job: Any) -> dict[str, Any]:
        return execute(self, runtime, job)

    # chained signing (worker/signing.py): the signer task's link and link_error
    keys = settings.secret_keys_text

    @app.task(name=signing.INSTALL_TASK, bind=True, shared=False, max_retries=None, ignore_result=ignore)
    def install_signed(self: Task[Any, Any], certificate_pem: Any, job_id: Any) -> dict[str, Any]:
        job = signing.phase1_job(runtime.redis, job_id, keys)
        if job is None:
            return _callback_dead(
                runtime,
                "unknown_chain",
                f"a signed certificate for phase-1 job {str(job_id)[:64]!r}, which this worker side"
                " did not record (or whose record expired or fails its MAC); not installed",
                {"task": signing.INSTALL_TASK, "job_id": job_id, "certificate": certificate_pem},
            )
        ended = signing.claim_end(runtime.redis, job_id, "installed", settings.result_expires)
        if ended != "installed":
            return _callback_dead(
                runtime,
                "late_certificate",
                f"the signed certificate for phase-1 job {job_id} arrived after its chain ended"
                f" ({ended}); not installed. Submit a reenrollment_complete job with it to install it",
                {"task": signing.INSTALL_TASK, "job_id": job_id, "certificate": certificate_pem},
            )
        if not isinstance(certificate_pem, str) or not certificate_pem.strip():
            detail = f"it returned {type(certificate_pem).__name__}, not a PEM certificate"
            return _signing_failed(runtime, app, job, detail, self.request.hostname)
        return execute(self, runtime, signing.completion_job(certificate_pem, job))

    @app.task(name=signing.FAILED_TASK, shared=False, ignore_result=ignore)
    def signing_failed(*args: Any, job_id: Any) -> dict[str, Any]:
        job = signing.phase1_job(runtime.redis, job_id, keys)
        if job is None:
            return _callback_dead(
                runtime,
                "unknown_chain",
                f"a signer failure for phase-1 job {str(job_id)[:64]!r}, which this worker side did not"
                " record (or whose record expired or fails its MAC)",
                {"task": signing.FAILED_TASK, "job_id": job_id},
            )
        if signing.claim_end(runtime.redis, job_id, "failed", settings.result_expires) != "failed":
            return {}
        return _signing_failed(runtime, app, job, signing.failure_detail(app, args), None)

    @app.task(name=signing.DEADLINE_TASK, shared=False, ignore_result=ignore)
    def signing_deadline(job_id: Any) -> dict[str, Any]:
        job = signing.phase1_job(runtime.redis, job_id, keys)
        if job is None:
            return {}
        if signing.claim_end(runtime.redis, job_id, "expired", settings.result_expires) != "expired":
            return {}  # the certificate arrived, or the signer failed, in time
        detail = (
            "no certificate arrived within WINCERT_SIGNING_DEADLINE_SECONDS="
            f"{settings.signing_deadline_seconds:g} (is a worker consuming the signer's queue, and"
            " does it run that task?)"
        )
        return _signing_failed(runtime, app, job, detail, None)

    def _on_task_failure(
        sender: Any = None, task_id: Any = None, exception: Any = None, args: Any = None, **_: Any
    ) -> None:
        ours = getattr(sender, "name", None) == TASK_NAME and getattr(sender, "app", None) is app
        if ours and isinstance(exception, TimeLimitExceeded):
            publish_hard_timeout(runtime, str(task_id), args)

    # the hard time limit kills the pool process; Celery's parent then sends task_failure
    task_failure.connect(_on_task_failure, weak=False, dispatch_uid=f"wincert-hard-timeout-{id(app)}")
    return run_job


def execute(task: Task[Any, Any], rt: Runtime, job: Any) -> dict[str, Any]:
    """The body of ``wincert.run_job`` (see the module docstring for the steps).

    Redis unreachable (restart, dropped connection) for longer than
    ``WINCERT_REDIS_RETRY_SECONDS``: the message is re-queued (``Reject(requeue=True)``), or,
    if the broker is gone too, left unacknowledged for redelivery after the visibility timeout;
    it is never acknowledged without a published result (docs/reliability.md).
    """
    try:
        return _execute_job(task, rt, job)
    except _REDIS_DOWN as exc:
        log.warning("Redis unreachable (%s: %s); the job's message is re-queued", type(exc).__name__, exc)
        with contextlib.suppress(RedisOutageError):  # re-queue once Redis is back, when it comes back soon
            retry_redis(rt.redis.ping, rt.settings.redis_retry_seconds, "reconnect before re-queueing")
        raise Reject(f"Redis unreachable: {type(exc).__name__}", requeue=True) from None


def _execute_job(task: Task[Any, Any], rt: Runtime, job: Any) -> dict[str, Any]:
    try:
        parsed = parse_job(job)
    except ValidationError as exc:
        return _invalid(rt, task, job, exc)
    store = parsed.store
    with job_context(
        job_id=str(parsed.job_id),
        job_type=parsed.job_type,
        store_type=store.store_type.value,
        host=store.host_key,
    ):
        try:
            return _execute(task, rt, job, parsed)
        except _PASS_THROUGH:
            raise
        except Exception as exc:  # a defect in the worker: report it, never loop
            log.exception("internal error while running the job")
            result = results.failure_result(
                parsed.job_id,
                JobType(parsed.job_type),
                ResultCode.INTERNAL_ERROR,
                f"internal worker error ({type(exc).__name__}); see the worker log for job {parsed.job_id}",
                store=store,
                worker=task.request.hostname,
            )
            return _finish(rt, JobState(rt.redis, str(parsed.job_id)), result)


def _execute(task: Task[Any, Any], rt: Runtime, job: Any, parsed: AnyJob) -> dict[str, Any]:
    settings = rt.settings
    job_id, host = str(parsed.job_id), limit_key(parsed.store)
    rt.register_affinity(task)
    job_type = str(parsed.job_type)
    state = JobState(rt.redis, job_id)
    worker = task.request.hostname
    retries = task.request.retries or 0
    limiter, limit, capacity = rt.limiter, settings.limit_for(host), rt.slot_waiters(host)
    too_old = _submitted_problem(settings, parsed)
    signer = getattr(parsed, "signer", None)
    signer_refused = signer is not None and not signer_allowed(task.app, settings, signer.task)
    waiting_since = time.monotonic()
    tried = None
    if too_old is None and not signer_refused:
        # the first slot try records the execution too (one script; worker/limits_acquire.lua)
        tried = limiter.acquire(
            host,
            job_id,
            limit,
            limiter.try_wait_seconds(min(settings.slot_block_seconds, settings.task_soft_time_limit / 4)),
            capacity,
            rt.idle_tokens(host, parsed.store),
            first=state.first_try(retries, settings.max_deliveries),
        )
        assert tried.delivery is not None
        delivery = state.delivered(tried.delivery)
    else:
        delivery = state.start(retries)

    if delivery.finished:
        log.info("job already finished; its kept result stands (duplicate delivery)")
        return _summary(state.result_key)  # its kept result stands

    def failure(code: ResultCode, message: str) -> JobResult:
        return results.failure_result(
            parsed.job_id,
            JobType(job_type),
            code,
            message,
            store=parsed.store,
            attempts=delivery.attempts,
            worker=worker,
        )

    if too_old is not None:
        code, message, reason = too_old
        return _dead(rt, task, job, state, failure(code, message), reason)

    if delivery.deliveries > settings.max_deliveries:  # (a first try took no slot for it)
        result = failure(
            ResultCode.INTERNAL_ERROR,
            f"the job was delivered {delivery.deliveries - 1} times without finishing (its worker"
            f" process died each time); stopped after WINCERT_MAX_DELIVERIES={settings.max_deliveries}."
            " Check the worker logs and memory limits for this job id",
        )
        return _dead(rt, task, job, state, result, "max_deliveries")

    if signer is not None and signer_refused:
        result = failure(
            ResultCode.SIGNER_NOT_ALLOWED,
            f"signer task {signer.task!r} is not in this worker's allow-list (WINCERT_SIGNER_TASKS="
            f"{settings.signer_tasks!r}); nothing was done on the host. Add it there, or drop 'signer'",
        )
        return _finish(rt, state, result)

    block = min(
        settings.slot_block_seconds,
        settings.task_soft_time_limit / 4,  # the wait runs inside the task's time limit
        settings.slot_wait_deadline_seconds - delivery.waited_seconds,
    )
    acquired = limiter.wait_for_slot(
        host,
        job_id,
        limit,
        block,
        capacity,
        idle_tokens=lambda: rt.idle_tokens(host, parsed.store),
        tried=tried,
    )
    if acquired.outcome is not SlotOutcome.GRANTED:
        if delivery.waited_seconds >= settings.slot_wait_deadline_seconds:
            result = failure(
                ResultCode.SLOT_DEADLINE_EXCEEDED,
                f"waited {delivery.waited_seconds:.0f} s for one of the {settings.limit_for(host)} slots of"
                f" host {host} (WINCERT_SLOT_WAIT_DEADLINE_SECONDS={settings.slot_wait_deadline_seconds:g});"
                " raise the host's limit (WINCERT_HOST_LIMITS) or submit fewer jobs for it at once",
            )
            return _dead(rt, task, job, state, result, "slot_deadline")
        waits = state.incr("waits", Phase.REQUEUED)
        countdown = retry_delay(waits - 1, settings.slot_retry_min_seconds, settings.slot_retry_max_seconds)
        metrics.SLOT_REQUEUES.labels(job_type=job_type).inc()
        log.info(
            "host slot %s (%d holders, limit %d); retrying in %.1f s",
            acquired.outcome.value,
            acquired.holders,
            settings.limit_for(host),
            countdown,
        )
        raise task.retry(countdown=countdown, max_retries=None)

    # waited: earlier executions plus this one's wait in wait_for_slot
    if state.first_grant(recorded=tried is not None and tried.outcome is SlotOutcome.GRANTED):
        waited = delivery.waited_seconds + (time.monotonic() - waiting_since)
        metrics.SLOT_WAIT.labels(job_type=job_type).observe(waited)
    assert rt.session_factory is not None
    metrics.SLOTS_IN_USE.inc()
    lease = rt.limiter.lease(host, job_id, acquired.reused, acquired.covered_ms)
    steps = journal.StepJournal(rt.redis, job_id, delivery.attempts)
    previous = _previous_inventory(rt, parsed)
    try:
        with lease, journal.active(steps):
            run = jobs.run(
                parsed,
                rt.session_factory,
                rt.credentials,
                attempts=delivery.attempts,
                worker=worker,
                ca_bundle=settings.ca_bundle,
                read_timeout=settings.read_timeout,
                reraise=(SoftTimeLimitExceeded,),
                previous=previous,
            )
    except SoftTimeLimitExceeded:
        outcome = Outcome(
            Status.FAILURE,
            ResultCode.TIMEOUT,
            f"the job ran longer than WINCERT_TASK_SOFT_TIME_LIMIT={settings.task_soft_time_limit:g} s"
            f" on host {host} and was stopped; raise the limit or check the host",
        )
        run = jobs.JobRun(
            jobs.result_from(parsed, outcome, attempts=delivery.attempts, worker=worker), "timeout"
        )
    finally:
        metrics.SLOTS_IN_USE.dec()

    # a first attempt has no earlier journal entries to report: no read
    result = journal.reconcile(run.result, steps.steps() if delivery.attempts > 1 else [], delivery.attempts)
    if lease.lost:
        result = result.model_copy(
            update={
                "warnings": [
                    *result.warnings,
                    "the host slot lease was lost while the job ran; the per-host limit may have"
                    " been exceeded",
                ]
            }
        )
    if run.error_kind is not None:
        metrics.REMOTE_ERRORS.labels(kind=run.error_kind).inc()
    if result.code in TRANSIENT_CODES:
        transient = state.incr("transient", Phase.RETRYING)
        if transient <= settings.transient_retries:
            metrics.RETRIES.labels(job_type=job_type, code=result.code.value).inc()
            delay = settings.transient_retry_delay_seconds * random.uniform(1.0, 1.5)
            log.warning(
                "%s (retry %d of %d in %.1f s): %s",
                result.code.value,
                transient,
                settings.transient_retries,
                delay,
                result.message,
            )
            raise task.retry(countdown=delay, max_retries=None)
    result = signing.after_phase1(
        task.app,
        parsed,
        result,
        settings.queue,
        rt.redis,
        settings.result_expires,
        keys=settings.secret_keys_text,
        signer_queue=settings.signer_queue,
        deadline_seconds=settings.signing_deadline_seconds,
    )
    publication = _publication(rt, state, result)  # published with the inventory state if any
    _record_inventory_state(rt, parsed, result, run.certificate_der, publication)
    return _finish(rt, state, result, ran=True, publication=publication)


def _submitted_problem(settings: WorkerSettings, job: AnyJob) -> tuple[ResultCode, str, str] | None:
    """Why a job must not run because of its ``submitted_at`` — (code, message, dead-letter
    reason): submitted longer than ``WINCERT_JOB_MAX_AGE_SECONDS`` ago, or further in the
    future than the allowed clock skew; None when it may run (or has no ``submitted_at``)."""
    submitted = job.submitted_at
    if submitted is None:
        return None
    if submitted.tzinfo is None:
        submitted = submitted.replace(tzinfo=UTC)
    age = (datetime.now(UTC) - submitted).total_seconds()
    if age > settings.job_max_age_seconds:  # a replayed message, or one stuck for a day
        return (
            ResultCode.JOB_TOO_OLD,
            f"the job was submitted {age:.0f} s ago, more than WINCERT_JOB_MAX_AGE_SECONDS="
            f"{settings.job_max_age_seconds:g}; nothing was done. Submit it again (a new job id)"
            " if it is still wanted",
            "job_too_old",
        )
    if -age > settings.job_max_clock_skew_seconds:  # would switch the age check off
        return (
            ResultCode.SUBMITTED_IN_FUTURE,
            f"the job's submitted_at is {-age:.0f} s in the future, more than"
            f" WINCERT_JOB_MAX_CLOCK_SKEW_SECONDS={settings.job_max_clock_skew_seconds:g};"
            " nothing was done. Check the producer's clock (and the worker's)",
            "submitted_in_future",
        )
    return None


def _previous_inventory(rt: Runtime, job: AnyJob) -> inventory_state.StoreInventory | None:
    """Inventory jobs: the store's state before the job (incremental inventory and the result's
    ``changes``); None for other jobs, or when Redis fails (a full inventory then)."""
    if not isinstance(job, InventoryJob):
        return None
    try:
        return inventory_state.InventoryState(rt.redis).get(job.store)
    except redis.RedisError as exc:
        log.warning("inventory state not read (full inventory): %s", exc)
        return None


def _record_inventory_state(
    rt: Runtime, job: AnyJob, result: JobResult, der: bytes | None, publication: results.Publication
) -> None:
    """Keep :mod:`worker.inventory_state` current, publishing ``publication`` in the same script
    (one call instead of two; the state is written before or with the result, never after); a
    Redis error is logged and counted, never fails the job (the next inventory of the store
    repairs the state, and :func:`_finish` publishes what was not published here)."""
    try:
        state = inventory_state.InventoryState(rt.redis, writer=publication)
        inventory_state.apply_job_result(state, job, result, der)
    except (redis.RedisError, RuntimeError) as exc:
        metrics.INVENTORY_STATE_ERRORS.inc()
        log.warning("inventory state not updated: %s", exc)
