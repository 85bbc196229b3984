"""Chained signing for reenrollment: generate → sign → install without a producer round trip.

When a successful ``reenrollment`` job names a ``signer`` (:class:`producer.messages.SignerRef`),
the worker publishes (:func:`publish_chain`)::

    <signer.task>(csr_pem, job_id)            on signer.queue (an upstream CA integration)
      link       → wincert.install_signed(certificate_pem, job_id)   task id = completion job id
      link_error → wincert.signing_failed(..., job_id=job_id)

* The completion job id is ``uuid5(phase-1 job_id, "complete")``
  (:func:`producer.messages.completion_job_id`); the phase-1 result message names it.
* ``wincert.install_signed`` (:func:`completion_job`) builds a ``reenrollment_complete`` job
  with the phase-1 job's store and entry parameters (``request_job_id`` = the phase-1 id) and
  runs it exactly as ``wincert.run_job`` runs any job, under the completion id, so
  ``Client.wait(completion_id)`` and the results stream see it like any other job. The signer's
  answer is PEM: the issued certificate first, then its chain; intermediates are installed in
  ``CA`` (``include_chain``), a self-signed root is never installed on a signer's word.
* A failing signer gives a ``signing_failed`` result for the completion job id
  (:func:`signing_failed_result`), published to the stream and stored under that id.

The links are a signature's ``link`` / ``link_error`` (what ``celery.chain`` builds), not
``celery.chain`` itself: a failing chain member makes Celery store FAILURE for every later
member's task id, i.e. for the completion id, before the errback could store its
``signing_failed`` result there.

A phase-1 job is redelivered if its worker dies before it finishes; a marker in Redis
(``wincert:signing:<job_id>``, taken with SET NX before the signer task is sent) keeps such a
redelivery from signing twice. The marker's value is the phase-1 job: the callbacks travel
through the signer's queue with only the job id, so the host's credential never reaches the
signer's side.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, cast

import redis
from celery import Celery
from cryptography import x509

from producer import auth
from producer.codes import ResultCode
from producer.messages import JobResult, JobType, ReenrollmentJob, Status, completion_job_id
from producer.secrets import encrypt_secret

log = logging.getLogger(__name__)

INSTALL_TASK = "wincert.install_signed"
"""``install_signed(certificate_pem: str, job_id: str)``: phase 2 for a chained signer's answer."""
FAILED_TASK = "wincert.signing_failed"
"""The error callback of the signer task (``job_id=`` the phase-1 job id)."""
DEADLINE_TASK = "wincert.signing_deadline"
"""``signing_deadline(job_id: str)``: ends a chain whose certificate has not arrived."""
DEFAULT_SIGNER_QUEUE = "wincert-signing"
_MARKER = "wincert:signing:{}"
_END = "wincert:signing:{}:end"
_RECORD_TASK = "wincert.signing-record"


def _record(job: ReenrollmentJob, keys: str | None) -> str:
    """The marker value: the phase-1 job (no plaintext password) and its MAC (with keys)."""
    data = job.model_dump(mode="json")
    credential = data["store"].get("credential")
    if isinstance(credential, dict) and credential.get("password_plaintext") is not None:
        plaintext = str(credential.pop("password_plaintext"))
        if keys:
            credential["password_encrypted"] = encrypt_secret(plaintext, keys)
    text = json.dumps(data)
    mac = auth.sign(auth.mac_keys(keys), _RECORD_TASK, str(job.job_id), None, text.encode()) if keys else None
    return json.dumps({"job": text, "mac": mac})


def claim_end(client: redis.Redis, job_id: Any, how: str, ttl: int) -> str:
    """Claim the end of a chain (``installed``, ``failed``, ``expired``); return the claim that
    holds: ``how`` when this call took it or it was taken the same way before (a redelivery)."""
    key = _END.format(job_id)
    if client.set(key, how, nx=True, ex=max(60, ttl)):
        return how
    held: Any = client.get(key)
    return held.decode() if isinstance(held, bytes) else str(held)


def publish_chain(
    app: Celery,
    job: ReenrollmentJob,
    csr_pem: str,
    queue: str,
    client: redis.Redis,
    ttl: int,
    *,
    keys: str | None = None,
    signer_queue: str = DEFAULT_SIGNER_QUEUE,
    deadline_seconds: float | None = None,
) -> uuid.UUID | None:
    """Send the signer task with its callbacks (see the module docstring); once per job.

    The phase-1 job (which names the host's credential) stays in this worker's Redis under the
    marker key for ``ttl`` seconds; the callbacks the signer's worker receives carry only the
    job id. The marker is taken (``SET NX``) *before* the signer task is sent, so a redelivered
    phase 1 can never have the CSR signed twice; it is released again if sending fails.

    The signer task goes to ``job.signer.queue`` or else ``signer_queue``; with
    ``deadline_seconds`` a :data:`DEADLINE_TASK` is sent to ``queue`` for then.

    Returns the completion job id, or None when this job's chain was already published.
    """
    assert job.signer is not None
    marker = _MARKER.format(job.job_id)
    completion = completion_job_id(job.job_id)
    if not client.set(marker, _record(job, keys), nx=True, ex=ttl):
        log.info("chained signing for job %s was published before; not again", job.job_id)
        return None
    job_id = str(job.job_id)
    install = app.signature(INSTALL_TASK, args=(job_id,), queue=queue, task_id=str(completion))
    failed = app.signature(FAILED_TASK, kwargs={"job_id": job_id}, queue=queue)
    options: dict[str, Any] = {
        "link": install,
        "link_error": failed,
        "queue": job.signer.queue or signer_queue,
    }
    try:
        app.send_task(job.signer.task, args=(csr_pem, job_id), **options)
    except Exception:
        client.delete(marker)
        raise
    if deadline_seconds is not None:
        try:
            app.send_task(DEADLINE_TASK, args=(job_id,), queue=queue, countdown=deadline_seconds)
        except Exception:  # the signer is on its way; say the deadline is not watched
            log.exception("chained signing: cannot send the deadline task for job %s", job_id)
    log.info("chained signing: %s → %s (completion job %s)", job.signer.task, INSTALL_TASK, completion)
    return completion


def phase1_job(client: redis.Redis, job_id: Any, keys: str | None = None) -> dict[str, Any] | None:
    """The phase-1 job :func:`publish_chain` kept for the callbacks (None once it expired).

    With ``keys`` the record's MAC must verify: a record this worker side did not write (planted
    by someone with Redis access, or changed) is refused with an error log (None).
    """
    raw: Any = client.get(_MARKER.format(job_id))
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        text = record["job"]
        if not isinstance(text, str):
            raise TypeError("job")
    except (ValueError, TypeError, KeyError):
        log.error("chained signing: the record of job %s is not one this worker wrote; refused", job_id)
        return None
    if keys and not auth.verify(
        auth.mac_keys(keys), record.get("mac"), _RECORD_TASK, str(job_id), None, text.encode()
    ):
        log.error("chained signing: the record of job %s fails its MAC (changed in Redis?); refused", job_id)
        return None
    try:
        return cast(dict[str, Any], json.loads(text))
    except ValueError:
        return None


def _self_signed(pem: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError:
        return False
    return cert.issuer == cert.subject


def completion_job(certificate_pem: Any, job: dict[str, Any]) -> dict[str, Any]:
    """The ``reenrollment_complete`` job (JSON-mode dict) for a signer's answer to phase-1 ``job``.

    The answer's first certificate is the issued one; the rest is its chain. A non-string answer
    is passed on as it is, so the completion job fails validation visibly (``invalid_job``)
    rather than disappearing.
    """
    phase1 = ReenrollmentJob.model_validate(job)
    certificate: Any = certificate_pem
    chain: list[str] = []
    if isinstance(certificate_pem, str) and certificate_pem.count("-----BEGIN CERTIFICATE-----") > 1:
        blocks = [b for b in certificate_pem.split("-----END CERTIFICATE-----") if "-----BEGIN" in b]
        pems = [b[b.index("-----BEGIN") :] + "-----END CERTIFICATE-----\n" for b in blocks]
        certificate, chain = pems[0], pems[1:]
    # intermediates from the signer go to CA; a root is never installed on a signer's word
    intermediates = [pem for pem in chain if not _self_signed(pem)]
    return {
        "job_type": "reenrollment_complete",
        "job_id": str(completion_job_id(phase1.job_id)),
        "store": phase1.store.model_dump(mode="json"),
        "certificate": certificate,
        "chain": intermediates,
        "include_chain": bool(intermediates),
        "request_job_id": str(phase1.job_id),
        "entry_parameters": (
            phase1.entry_parameters.model_dump(mode="json", by_alias=True)
            if phase1.entry_parameters is not None
            else None
        ),
        "allow_takeover": phase1.allow_takeover,
    }


def signing_failed_result(job: dict[str, Any], detail: str, worker: str | None) -> JobResult:
    """The ``signing_failed`` result of the completion job of phase-1 ``job``."""
    phase1 = ReenrollmentJob.model_validate(job)
    assert phase1.signer is not None
    return JobResult(
        job_id=completion_job_id(phase1.job_id),
        job_type=JobType.REENROLLMENT_COMPLETE,
        store_type=phase1.store.store_type,
        client_machine=phase1.store.client_machine,
        store_path=phase1.store.store_path,
        status=Status.FAILURE,
        code=ResultCode.SIGNING_FAILED,
        message=(
            f"the signer task {phase1.signer.task} failed for the request of job {phase1.job_id}: {detail}."
            " The pending key stays in the host's REQUEST store: sign the CSR of that job's result and"
            " submit a reenrollment_complete job, or submit the reenrollment job again"
        ),
        worker=worker,
    )


def failure_detail(app: Celery, args: tuple[Any, ...]) -> str:
    """What went wrong, from an error callback's arguments: ``(request, exc, traceback)`` when
    the failing worker runs it directly, ``(task_id,)`` when it sent it as a task (the signer
    runs in a worker that does not know ``wincert.signing_failed``)."""
    if len(args) >= 2 and isinstance(args[1], BaseException):
        return f"{type(args[1]).__name__}: {args[1]}"
    if args and isinstance(args[0], str):
        try:
            value = app.AsyncResult(args[0]).result
        except Exception as exc:  # the backend is unreachable: say so, never fail the errback
            return f"task {args[0]} failed (its error could not be read: {type(exc).__name__})"
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}"
        return f"task {args[0]}: {value}"
    return "the signer task failed"


def after_phase1(
    app: Celery,
    job: Any,
    result: JobResult,
    queue: str,
    client: redis.Redis,
    ttl: int,
    *,
    keys: str | None = None,
    signer_queue: str = DEFAULT_SIGNER_QUEUE,
    deadline_seconds: float | None = None,
) -> JobResult:
    """Publish chained signing after a successful ``reenrollment`` with a signer; return the
    result to publish (unchanged, or ``signing_failed`` when the signer task cannot be sent —
    the CSR stays in the result)."""
    if not isinstance(job, ReenrollmentJob) or job.signer is None:
        return result
    if result.status is Status.FAILURE or not result.csr:
        return result
    try:
        publish_chain(
            app,
            job,
            result.csr,
            queue,
            client,
            ttl,
            keys=keys,
            signer_queue=signer_queue,
            deadline_seconds=deadline_seconds,
        )
    except Exception as exc:  # the broker refused: the job's own work is done, say what is missing
        log.exception("cannot publish the signer task")
        return result.model_copy(
            update={
                "status": Status.FAILURE,
                "code": ResultCode.SIGNING_FAILED,
                "message": f"{result.message} But the signer task {job.signer.task} could not be sent"
                f" ({type(exc).__name__}: {exc}); the CSR is in 'csr': sign it and submit a"
                " reenrollment_complete job, or submit this job again.",
            }
        )
    return result
