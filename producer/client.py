"""Submit jobs, wait for results, and follow the results stream.

:class:`Client` is the producer's whole surface: it validates a job with the models in
:mod:`producer.messages`, sends it as a Celery message (task :data:`TASK_NAME`, one argument:
the job as a JSON-mode dict, task id = ``str(job_id)``) to the configured queue, and reads
results where the worker keeps them (:mod:`producer.result_store`: the key
``wincert:job:<job_id>:result`` and the Redis Stream :data:`RESULTS_STREAM`), on the broker's
Redis. Celery's result backend is not used.

It builds its own minimal Celery app for sending and never imports the worker, so upstream
systems can depend on the ``producer`` package alone::

    from producer import Client, InventoryJob, StoreRef

    with Client() as client:                      # settings from WINCERT_* variables
        job = InventoryJob(job_type="inventory",
                           store=StoreRef(store_type="WinCert", client_machine="web01",
                                          store_path="My"))
        job_id = client.submit(job)
        result = client.wait(job_id, timeout=60)  # JobResult

Every job is authenticated: with ``WINCERT_SECRET_KEYS`` set, each message carries a MAC made with
the shared key (:mod:`producer.auth`); workers run only authenticated jobs.

Management Add jobs carry the certificate sealed: ``client.certificate_data(file_bytes, password)``
encrypts the file and its PKCS#12 password with ``WINCERT_SECRET_KEYS`` (``None``: no password).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, cast

import redis
from celery import Celery
from pydantic import RootModel, SecretStr, ValidationError

from producer import auth, progress, result_store
from producer.messages import (
    RESULTS_STREAM,
    TASK_NAME,
    AddJob,
    AnyJob,
    CertificateData,
    InlineCredential,
    Job,
    JobResult,
    StoreRef,
    job_json_schema,
    parse_job,
)
from producer.redis_connection import merge_celery_options
from producer.secrets import parse_keys
from producer.settings import ProducerSettings

__all__ = [
    "BackendUnavailableError",
    "Client",
    "PlaintextSecretRefusedError",
    "ProducerError",
    "ResultFormatError",
    "ResultTimeoutError",
    "TaskFailedError",
    "endpoint",
    "export_job_schema",
    "redact_url",
]

log = logging.getLogger(__name__)

_STREAM_SCAN_BATCH = 500
SOCKET_TIMEOUT_SECONDS = 30.0
"""Longest wait for any one Redis reply (XREAD blocks are cut below it: :data:`_MAX_BLOCK_MS`)."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""Longest wait for a TCP connection to Redis."""
_MAX_BLOCK_MS = 20_000
_FIRST_POLL_SECONDS = 0.05
_MAX_POLL_SECONDS = 0.5


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


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)


def export_job_schema() -> str:
    """The job JSON Schema as text, exactly as checked in at ``schema/job.schema.json``.

    Two-space indented JSON of :func:`producer.messages.job_json_schema`, ending in a newline.
    """
    return json.dumps(job_json_schema(), indent=2, ensure_ascii=False) + "\n"


def endpoint(store: StoreRef) -> str:
    """``host:port`` of a store's WinRM listener, IPv6 literals in brackets (``[::1]:5986``)."""
    host = store.client_machine
    return f"[{host}]:{store.effective_port}" if ":" in host else f"{host}:{store.effective_port}"


def _as_uuid(job_id: uuid.UUID | str) -> uuid.UUID:
    return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))


class Client:
    """Producer client: submit jobs, wait for and read results, follow the results stream.

    Args:
        settings: Connection and secret settings; ``None`` reads ``WINCERT_*`` environment
            variables (:class:`ProducerSettings`).

    Creating a client opens no connection; the first :meth:`submit`, :meth:`wait`,
    :meth:`result` or :meth:`iter_results` does. Use it as a context manager or call
    :meth:`close`. One client may be shared by threads for :meth:`submit`; give each thread
    that calls :meth:`wait` or :meth:`iter_results` its own client.

    Connection failures surface as the underlying library errors
    (``kombu.exceptions.OperationalError`` when sending, ``redis.exceptions.ConnectionError``
    when reading).
    """

    def __init__(self, settings: ProducerSettings | None = None) -> None:
        self.settings = settings if settings is not None else ProducerSettings()
        # Sending needs no result backend (with one, Celery's Redis backend would SUBSCRIBE to
        # every submitted task id); results are read from the worker's kept copy on Redis.
        self._send_app = self._make_app(self.settings, backend=None)
        self._signing = False
        self._redis: redis.Redis | None = None

    @staticmethod
    def _make_app(settings: ProducerSettings, backend: str | None) -> Celery:
        app = Celery("wincert-producer", broker=settings.broker_url, backend=backend, set_as_current=False)
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_serializer="json",
            result_accept_content=["json"],
            task_default_queue=settings.queue,
            broker_connection_retry_on_startup=False,
            # Every Redis socket operation is bounded: a rediss:// URL to a plain Redis (the TLS
            # handshake never completes) or a silent peer fails in seconds instead of hanging.
            broker_transport_options={
                "visibility_timeout": settings.visibility_timeout,
                "socket_timeout": SOCKET_TIMEOUT_SECONDS,
                "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            },
            redis_socket_timeout=SOCKET_TIMEOUT_SECONDS,
            redis_socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            result_backend_transport_options={
                "visibility_timeout": settings.visibility_timeout,
                # Give up on an unreachable result backend within seconds (default: ~20 s).
                "retry_policy": {
                    "max_retries": 3,
                    "interval_start": 0,
                    "interval_step": 0.5,
                    "interval_max": 1,
                },
            },
            visibility_timeout=settings.visibility_timeout,
            # Fail a publish to an unreachable broker within seconds instead of hanging.
            task_publish_retry_policy={
                "max_retries": 3,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        )
        # rediss:// (CA, client certificate) and sentinel:// (master name)
        app.conf.update(
            merge_celery_options(
                {
                    "broker_transport_options": dict(app.conf.broker_transport_options or {}),
                    "result_backend_transport_options": dict(app.conf.result_backend_transport_options or {}),
                },
                settings.redis_connection,
            )
        )
        return app

    # --- context manager -------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the Redis connection and the Celery app's connection pools. Idempotent."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        self._send_app.close()

    # --- jobs ------------------------------------------------------------------------------

    def prepare(self, job: AnyJob | Job | Mapping[str, Any] | str | bytes) -> AnyJob:
        """Validate ``job`` and apply the producer's rules, without sending anything.

        Accepts a job model, a :data:`Job` root model, a JSON-compatible dict or JSON text.
        Models are re-validated (a ``model_construct``-ed model is checked too). Sets
        ``submitted_at`` to now (UTC) when it is missing.

        Raises:
            pydantic.ValidationError: naming each invalid field (``loc``).
            PlaintextSecretRefusedError: ``allow_plaintext_secrets`` is off and the job carries a
                plaintext secret: ``store.credential.password_plaintext``, or (Add jobs)
                ``certificate.contents_plaintext`` / ``certificate.password_plaintext``.
        """
        if isinstance(job, RootModel):
            job = job.root
        if isinstance(job, str | bytes):
            parsed = parse_job(job)
        elif isinstance(job, Mapping):
            parsed = parse_job(dict(job))
        else:
            parsed = parse_job(job.model_dump(mode="json"))
        credential = parsed.store.credential
        if (
            isinstance(credential, InlineCredential)
            and credential.password_plaintext is not None
            and not self.settings.allow_plaintext_secrets
        ):
            raise PlaintextSecretRefusedError(
                "store.credential.password_plaintext: plaintext passwords are refused; encrypt it"
                " with WINCERT_SECRET_KEYS (Client.inline_credential does) or, for development"
                " only, set WINCERT_ALLOW_PLAINTEXT_SECRETS=true on producer and worker"
            )
        if (
            isinstance(parsed, AddJob)
            and parsed.certificate.has_plaintext
            and not self.settings.allow_plaintext_secrets
        ):
            parts = [
                name
                for name, value in (
                    ("contents_plaintext", parsed.certificate.contents_plaintext),
                    ("password_plaintext", parsed.certificate.password_plaintext),
                )
                if value is not None
            ]
            raise PlaintextSecretRefusedError(
                f"certificate.{' and certificate.'.join(parts)}: the certificate and its password travel"
                " only encrypted; seal them with WINCERT_SECRET_KEYS (Client.certificate_data does) or,"
                " for development only, set WINCERT_ALLOW_PLAINTEXT_SECRETS=true on producer and worker"
            )
        if parsed.submitted_at is None:
            parsed = parsed.model_copy(update={"submitted_at": datetime.now(UTC)})
        return parsed

    def submit(self, job: AnyJob | Job | Mapping[str, Any] | str | bytes) -> uuid.UUID:
        """Validate ``job`` and send it to the queue; return its ``job_id``.

        Validation (:meth:`prepare`) happens before any connection is made, so an invalid job
        enqueues nothing. The Celery message: task :data:`TASK_NAME`, ``args=[job JSON dict]``,
        task id ``str(job_id)``, queue ``settings.queue``. The message's ``argsrepr`` (shown
        in logs and monitoring) is a summary without credentials.

        Returns:
            The job's ``job_id`` (also the Celery task id).

        Raises:
            pydantic.ValidationError: naming each invalid field.
            PlaintextSecretRefusedError: see :meth:`prepare`.
            producer.secrets.SecretKeyError: ``WINCERT_SECRET_KEYS`` is malformed.
            kombu.exceptions.OperationalError: the broker is unreachable.
        """
        prepared = self.prepare(job)
        if self.settings.has_secret_keys and not self._signing:
            # every job is authenticated with the shared key (producer/auth.py); workers refuse others
            assert self.settings.secret_keys is not None
            auth.install(self._send_app, self.settings.secret_keys.get_secret_value())
            self._signing = True
        store = prepared.store
        summary = (
            f"<{prepared.job_type} job {prepared.job_id}: {store.store_type.value}"
            f" {store.store_path!r} on {endpoint(store)}>"
        )
        self._send_app.send_task(
            TASK_NAME,
            args=[prepared.model_dump(mode="json")],
            task_id=str(prepared.job_id),
            queue=self.settings.queue,
            argsrepr=f"[{summary}]",
            kwargsrepr="{}",
        )
        log.info("submitted %s to queue %s", summary, self.settings.queue)
        return prepared.job_id

    def inline_credential(self, username: str, password: str | SecretStr) -> InlineCredential:
        """An :class:`InlineCredential` for ``username``, its password encrypted.

        Encrypts with the first of ``settings.secret_keys`` (Fernet). Without keys, returns a
        plaintext credential only when ``settings.allow_plaintext_secrets`` is on.

        Raises:
            PlaintextSecretRefusedError: no secret keys and plaintext not allowed.
            producer.secrets.SecretKeyError: a configured key is malformed.
            pydantic.ValidationError: the username is invalid (``loc`` ``('username',)``).
        """
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        seal = self._sealer()
        if seal is not None:
            return InlineCredential(kind="inline", username=username, password_encrypted=seal(secret))
        if self.settings.allow_plaintext_secrets:
            return InlineCredential(kind="inline", username=username, password_plaintext=SecretStr(secret))
        raise PlaintextSecretRefusedError(
            "cannot send an inline password: WINCERT_SECRET_KEYS is not set (generate a key with"
            " `wincert keygen` and give the same keys to the workers), and plaintext is not"
            " allowed (WINCERT_ALLOW_PLAINTEXT_SECRETS=true, development only); or use a named"
            " credential the worker resolves (--credential NAME)"
        )

    def certificate_data(self, contents: bytes | str, password: str | SecretStr | None) -> CertificateData:
        """A sealed :class:`CertificateData` for an Add job: the file and its PKCS#12 password.

        Args:
            contents: The certificate file. ``bytes`` (PKCS#12 ``.pfx``/``.p12``, DER, PEM or
                PKCS#7, exactly as on disk) are sent as their standard base64 text; ``str`` is sent
                as it is and must be PEM text or base64 text of the file.
            password: The PKCS#12 password. ``None`` means *no password* (no password field is
                sent); ``""`` is the *empty password* (sent encrypted like any other). Windows
                treats the two differently; the worker tries exactly the one given. Ignored by
                the worker for files without a private key.

        Returns:
            With ``settings.secret_keys``: ``CertificateData(contents_encrypted=<Fernet token of
            the base64/PEM text>, password_encrypted=<Fernet token of the UTF-8 password> or
            None)``, encrypted with the first key. Without keys but with
            ``settings.allow_plaintext_secrets`` (development only): the same text in
            ``contents_plaintext`` / ``password_plaintext``.

        Raises:
            PlaintextSecretRefusedError: no secret keys and plaintext not allowed (names
                ``WINCERT_SECRET_KEYS`` and ``WINCERT_ALLOW_PLAINTEXT_SECRETS``).
            producer.secrets.SecretKeyError: a configured key is malformed.
            ValueError: ``contents`` is empty.
        """
        if isinstance(contents, str):
            if not contents.strip():
                raise ValueError("the certificate text is empty")
            text = contents
        else:
            raw = bytes(contents)
            if not raw.strip(b"\x00 \t\r\n"):
                raise ValueError("the certificate file is empty")
            text = base64.b64encode(raw).decode("ascii")
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        seal = self._sealer()
        if seal is not None:
            return CertificateData(
                contents_encrypted=seal(text),
                password_encrypted=None if secret is None else seal(secret),
            )
        if self.settings.allow_plaintext_secrets:
            return CertificateData(
                contents_plaintext=SecretStr(text),
                password_plaintext=None if secret is None else SecretStr(secret),
            )
        raise PlaintextSecretRefusedError(
            "cannot send the certificate: WINCERT_SECRET_KEYS is not set (generate a key with"
            " `wincert keygen` and give the same keys to the workers), and plaintext is not"
            " allowed (WINCERT_ALLOW_PLAINTEXT_SECRETS=true, development only)"
        )

    def _sealer(self) -> Callable[[str], str] | None:
        """Encrypt text with the first of ``settings.secret_keys`` (None without keys).

        Raises:
            producer.secrets.SecretKeyError: a configured key is malformed.
        """
        if not self.settings.has_secret_keys:
            return None
        assert self.settings.secret_keys is not None
        keys = parse_keys(self.settings.secret_keys.get_secret_value())
        return lambda text: keys.encrypt(text.encode("utf-8")).decode("ascii")

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
            self._redis = self.settings.redis_connection.client(
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
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
