"""Job implementations and the dispatch table: ``(job_type, store_type)`` → function.

To add a job type, write ``def <name>(job, session) -> Outcome`` in the store type's module
(``wincert.py``; later ``iisu.py``, ``winsql.py``) and add one line to :data:`HANDLERS`.

:func:`run` is what :mod:`worker.tasks` calls: it resolves the credential, opens a session with
the injected factory, runs the handler, and turns any failure into a ``failure`` result with a
stable code (:func:`worker.remote.errors.classify`). It never raises for job failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producer.codes import ResultCode
from producer.inventory_model import StoreInventory
from producer.messages import AddJob, AnyJob, InventoryJob, JobResult, JobType, Status, StoreType
from worker import redaction
from worker.credentials import (
    Credential,
    CredentialError,
    CredentialResolver,
    CredentialScopeError,
    check_scope,
)
from worker.jobs import certificates, check_bindings, iisu, incremental, reenrollment, wincert, winsql
from worker.jobs.outcome import JobStepError, Outcome
from worker.remote.errors import classify
from worker.remote.session import LOCAL_CREDENTIAL, SessionFactory

log = logging.getLogger(__name__)

Handler = Callable[..., Outcome]
"""``handler(job, session)``; Add handlers also take the :class:`PreparedCertificate`."""

HANDLERS: dict[tuple[JobType, StoreType], Handler] = {
    (JobType.INVENTORY, StoreType.WIN_CERT): wincert.inventory,
    (JobType.ADD, StoreType.WIN_CERT): wincert.add,
    (JobType.REMOVE, StoreType.WIN_CERT): wincert.remove,
    (JobType.INVENTORY, StoreType.IISU): iisu.inventory,
    (JobType.ADD, StoreType.IISU): check_bindings.iisu_add,
    (JobType.REMOVE, StoreType.IISU): check_bindings.iisu_remove,
    (JobType.INVENTORY, StoreType.WIN_SQL): winsql.inventory,
    (JobType.ADD, StoreType.WIN_SQL): check_bindings.winsql_add,
    (JobType.REMOVE, StoreType.WIN_SQL): check_bindings.winsql_remove,
    (JobType.REENROLLMENT, StoreType.WIN_CERT): reenrollment.generate,
    (JobType.REENROLLMENT, StoreType.IISU): reenrollment.generate,
    (JobType.REENROLLMENT, StoreType.WIN_SQL): reenrollment.generate,
    (JobType.REENROLLMENT_COMPLETE, StoreType.WIN_CERT): reenrollment.complete,
    (JobType.REENROLLMENT_COMPLETE, StoreType.IISU): reenrollment.complete,
    (JobType.REENROLLMENT_COMPLETE, StoreType.WIN_SQL): reenrollment.complete,
}
"""Which function implements a job type for a store type."""


@dataclass(frozen=True)
class JobRun:
    """A finished job: its result and, for a remote failure, the metrics ``kind``."""

    result: JobResult
    error_kind: str | None = None
    certificate_der: bytes | None = None
    """Add jobs: the leaf certificate the worker parsed (for :mod:`worker.inventory_state`)."""


def result_from(
    job: AnyJob,
    outcome: Outcome,
    started: datetime | None = None,
    elapsed: float | None = None,
    **extra: Any,
) -> JobResult:
    """The :class:`JobResult` of ``job`` for ``outcome`` (``extra``: attempts, worker)."""
    finished = datetime.now(UTC)
    return JobResult(
        job_id=job.job_id,
        job_type=JobType(job.job_type),
        store_type=job.store.store_type,
        client_machine=job.store.client_machine,
        store_path=job.store.store_path,
        status=outcome.status,
        code=outcome.code,
        message=outcome.message,
        warnings=outcome.warnings,
        started_at=started or finished,
        finished_at=finished,
        duration_seconds=round(elapsed, 6) if elapsed is not None else None,
        items=outcome.items,
        thumbprint=outcome.thumbprint,
        csr=outcome.csr,
        key_access=outcome.key_access,
        ssl_mappings=outcome.ssl_mappings,
        **extra,
    )


def run(
    job: AnyJob,
    session_factory: SessionFactory,
    credentials: CredentialResolver,
    *,
    attempts: int = 1,
    worker: str | None = None,
    ca_bundle: Path | None = None,
    read_timeout: int | None = None,
    reraise: tuple[type[BaseException], ...] = (),
    previous: StoreInventory | None = None,
) -> JobRun:
    """Run ``job`` against its host and return the :class:`JobResult` (never raises for job failures).

    Args:
        job: a validated job.
        session_factory: opens a :class:`RemoteSession` for ``(store, credential)``.
        credentials: resolves ``job.store.credential``.
        attempts, worker: copied into the result.
        ca_bundle, read_timeout: named in failure messages.
        reraise: exception types to let through (e.g. Celery's SoftTimeLimitExceeded).
        previous: inventory jobs: the store's inventory state read before the job (untrusted;
            used only if it is this store's, :func:`worker.jobs.incremental.baseline`): the
            result's ``changes``, and a WinCert inventory without DER asks the host only for
            what it does not know.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    extra: dict[str, Any] = {"attempts": attempts, "worker": worker}
    handler = HANDLERS.get((JobType(job.job_type), job.store.store_type))
    if handler is None:
        outcome = Outcome(
            Status.FAILURE,
            ResultCode.INVALID_JOB,
            f"{job.job_type} jobs for {job.store.store_type.value} stores are not supported by this worker",
        )
        return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra))
    secrets: list[str] = []
    label = "the job's credential"
    credential: Credential | None = None
    store = job.store
    insecure = store.protocol.value == "https" and not store.cert_validation and not store.is_local
    if insecure and not credentials.settings.allow_insecure_tls:
        outcome = Outcome(
            Status.FAILURE,
            ResultCode.TLS_ERROR,
            "the job turns off HTTPS certificate validation (cert_validation false), which this"
            " worker refuses: the credential would go to whoever answers. Give the worker the"
            " listener's CA (WINCERT_CA_BUNDLE), or set WINCERT_ALLOW_INSECURE_TLS=true on it",
        )
        return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra), "tls")
    try:
        args: tuple[Any, ...] = ()
        leaf: bytes | None = None
        if isinstance(job, AddJob):  # checked on the worker before anything is sent
            prepared = certificates.prepare(job, credentials.settings)
            secrets.extend(p for p in (prepared.password,) if p)
            args = (prepared,)
            leaf = prepared.parsed.leaf_der
        # local mode: the PowerShell process runs as the worker's own account, no credential
        credential = LOCAL_CREDENTIAL if job.store.is_local else credentials.resolve(job.store.credential)
        if not job.store.is_local:
            check_scope(credential, job.store.client_machine)  # before any connection
        secrets.append(credential.password.get_secret_value())
        if credential.material is not None:
            secrets.extend(
                s.get_secret_value()
                for s in (credential.material.private_key, credential.material.private_key_passphrase)
                if s is not None
            )
        label = credential.label
        redaction.remember(secrets)  # logs (pypsrp, Celery, ours) never show them from now on
        if isinstance(job, InventoryJob):
            previous = incremental.baseline(job.store, previous)
            if job.store.store_type is StoreType.WIN_CERT:
                args = (previous,)
        with session_factory(job.store, credential) as session:
            outcome = handler(job, session, *args)
    except JobStepError as exc:
        outcome = Outcome(Status.FAILURE, exc.code, exc.message, exc.warnings)
        return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra), exc.code.value)
    except CredentialScopeError as exc:
        outcome = Outcome(Status.FAILURE, ResultCode.CREDENTIAL_OUT_OF_SCOPE, str(exc))
        return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra), "credential")
    except CredentialError as exc:
        outcome = Outcome(Status.FAILURE, ResultCode.CREDENTIAL_UNAVAILABLE, str(exc))
        return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra), "credential")
    except reraise:
        raise
    except Exception as exc:
        classified = classify(
            exc,
            job.store,
            credential_label=label,
            ca_bundle=ca_bundle,
            read_timeout=read_timeout,
            secrets=secrets,
            credential=credential,
        )
        log.warning("job failed: %s (%s)", classified.code.value, type(exc).__name__)
        outcome = Outcome(Status.FAILURE, classified.code, classified.message)
        return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra), classified.kind)
    if isinstance(job, InventoryJob) and outcome.status is not Status.FAILURE and outcome.items is not None:
        extra["changes"] = incremental.changes(previous, outcome.items, outcome.warnings)
    return JobRun(result_from(job, outcome, started, time.monotonic() - clock, **extra), certificate_der=leaf)
