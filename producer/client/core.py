"""The producer client: validate a job and apply the producer's secret rules, seal secrets with
the shared key, send the job as an authenticated Celery message; reading results is
:class:`~producer.client.results.ResultReading`'s part."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import redis
from pydantic import RootModel, SecretStr

from producer import auth
from producer.client.connections import make_send_app
from producer.client.errors import PlaintextSecretRefusedError
from producer.client.formatting import endpoint
from producer.client.results import ResultReading
from producer.messages import (
    TASK_NAME,
    AddJob,
    AnyJob,
    CertificateData,
    InlineCredential,
    Job,
    parse_job,
)
from producer.secrets import parse_keys
from producer.settings import ProducerSettings

log = logging.getLogger(__name__)


class Client(ResultReading):
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
        self._send_app = make_send_app(self.settings, backend=None)
        self._signing = False
        self._redis: redis.Redis | None = None

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
