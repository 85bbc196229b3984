"""Job and result models: the contract between producers and workers (pydantic v2).

Wire format: JSON produced by ``model.model_dump(mode="json")``. A job is one member of the
:data:`Job` discriminated union, tagged by ``job_type``. Every job carries a ``job_id`` (UUID,
the idempotency key), a ``schema_version`` and a :class:`StoreRef` naming the certificate store
and how to reach its host.

Validation happens here, before anything is enqueued: an invalid job raises
:class:`pydantic.ValidationError` whose error ``loc`` names the field (for example
``('store', 'port')``) and whose message says what to fix. JSON Schema for non-Python
producers: :func:`job_json_schema` (``wincert schema``).

Secrets: inline passwords travel only as Fernet tokens (``password_encrypted``) unless the
producer explicitly allowed plaintext (``password_plaintext``, a :class:`~pydantic.SecretStr`
that ``repr`` and logs never show). Results never contain secrets.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SecretStr,
    TypeAdapter,
    field_serializer,
    field_validator,
    model_validator,
)

from producer.codes import ResultCode

SCHEMA_VERSION: Literal[1] = 1
"""Current job schema version; bump on incompatible changes (additive changes keep it)."""

TASK_NAME = "wincert.run_job"
"""The Celery task every job is sent to; its single argument is the job as JSON-mode dict."""
DEFAULT_QUEUE = "wincert"
"""The default Celery queue (``WINCERT_QUEUE``)."""
RESULTS_STREAM = "wincert:results"
"""Redis Stream that receives one entry per finished job: field ``result`` = JobResult JSON."""
DEAD_LETTER_STREAM = "wincert:dead"
"""Redis Stream of jobs that could not be completed (redelivery cap, slot deadline, invalid)."""

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
THUMBPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
"""A certificate thumbprint as this project writes it: SHA-1 of the DER, 40 upper-case hex."""


class StoreType(StrEnum):
    """Store types, named as in the peer (Keyfactor) so its users can move over."""

    WIN_CERT = "WinCert"
    """Any LocalMachine certificate store named by its store path."""
    IISU = "IISU"
    """Certificates bound to IIS HTTPS bindings (store path ``My`` or ``WebHosting``)."""
    WIN_SQL = "WinSQL"
    """The certificate SQL Server instances use for TLS."""


class JobType(StrEnum):
    """Job types (the ``job_type`` tag of :data:`Job`)."""

    INVENTORY = "inventory"


class Protocol(StrEnum):
    """WinRM transport: ``http`` (port 5985, message encryption) or ``https`` (port 5986)."""

    HTTP = "http"
    HTTPS = "https"


class AuthMethod(StrEnum):
    """WinRM authentication methods, as pypsrp names them."""

    NEGOTIATE = "negotiate"
    NTLM = "ntlm"
    KERBEROS = "kerberos"
    BASIC = "basic"
    CREDSSP = "credssp"
    CERTIFICATE = "certificate"


class Status(StrEnum):
    """Overall job outcome."""

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


DEFAULT_PORTS = {Protocol.HTTP: 5985, Protocol.HTTPS: 5986}


def validate_host(value: str) -> str:
    """Check a host name or IP literal; return it with IPv6 brackets removed.

    Accepts an RFC 1123 host name (labels of letters, digits and ``-``, at most 253
    characters), an IPv4 literal, or an IPv6 literal with or without ``[...]``.

    Raises:
        ValueError: with a message saying what a valid host looks like.
    """
    host = value.strip()
    if not host:
        raise ValueError("is empty; give a host name or IP address, e.g. web01.contoso.com")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            f"{value!r} is not a valid host name or IP address; use letters, digits, '-' and '.'"
            " (e.g. web01.contoso.com), an IPv4 address, or an IPv6 address in brackets; put the"
            " port in the 'port' field"
        )
    if name.replace(".", "").isdigit():
        raise ValueError(
            f"{value!r} looks like an IPv4 address but is not a valid one; use four numbers 0-255"
            " separated by dots, e.g. 192.0.2.10"
        )
    return host


def normalize_thumbprint(value: str) -> str:
    """Normalise a thumbprint copied from anywhere to 40 upper-case hex characters.

    Removes spaces, colons and the invisible marks U+200E, U+200F and U+FEFF that come with
    copying from the Windows certificate UI, and upper-cases the rest.

    Raises:
        ValueError: if the result is not 40 hex characters.
    """
    cleaned = re.sub(r"[\s:\u200e\u200f\ufeff]", "", value).upper()
    if not THUMBPRINT_RE.match(cleaned):
        raise ValueError(f"{value!r} is not a SHA-1 thumbprint (40 hex characters)")
    return cleaned


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class NamedCredential(_Model):
    """A credential the worker resolves from its own configuration by name.

    See ``WINCERT_CREDENTIALS_FILE`` / ``WINCERT_CREDENTIAL_<NAME>_USERNAME`` in the README.
    """

    kind: Literal["named"]
    name: str = Field(description="Credential name, letters/digits/_.- (max 128)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CREDENTIAL_NAME.match(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits, '_', '.' or '-', starting with a"
                " letter or digit"
            )
        return value


class InlineCredential(_Model):
    """Username plus a password carried in the job, encrypted with a shared Fernet key.

    ``password_encrypted`` is a Fernet token made with one of ``WINCERT_SECRET_KEYS``
    (:func:`producer.secrets.encrypt_secret`). ``password_plaintext`` exists only for
    development setups that explicitly allow it on both producer and worker.
    """

    kind: Literal["inline"]
    username: str = Field(min_length=1, max_length=256, description="DOMAIN\\user, user@domain or user")
    password_encrypted: str | None = Field(default=None, description="Fernet token (urlsafe base64)")
    password_plaintext: SecretStr | None = Field(
        default=None, description="Plaintext password; refused unless explicitly allowed"
    )

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> InlineCredential:
        if (self.password_encrypted is None) == (self.password_plaintext is None):
            raise ValueError(
                "give exactly one of password_encrypted (a Fernet token made with"
                " WINCERT_SECRET_KEYS) or password_plaintext (only where explicitly allowed)"
            )
        return self

    @field_serializer("password_plaintext", when_used="json")
    def _reveal_for_wire(self, value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()


Credential = Annotated[NamedCredential | InlineCredential, Field(discriminator="kind")]


class StoreRef(_Model):
    """Which certificate store, on which host, and how to reach that host over WinRM.

    A store's identity is (store_type, client_machine, store_path).
    """

    store_type: StoreType
    client_machine: str = Field(description="Host name or IP address of the Windows host")
    store_path: str = Field(
        min_length=1,
        max_length=256,
        description="LocalMachine store name, e.g. My, Root, WebHosting, 'Remote Desktop'",
    )
    protocol: Protocol = Protocol.HTTPS
    port: int | None = Field(
        default=None, ge=1, le=65535, description="WinRM port; default 5985 (http) / 5986 (https)"
    )
    auth: AuthMethod = AuthMethod.NEGOTIATE
    credential: Credential | None = Field(
        default=None, description="None: the worker's default credential (WINCERT_DEFAULT_CREDENTIAL)"
    )
    cert_validation: bool = Field(
        default=True, description="Validate the HTTPS listener certificate (CA bundle on the worker)"
    )
    spn_with_port: bool = Field(default=False, description="Kerberos SPN HTTP/host:port (peer 'spnwithport')")
    jea_endpoint: str | None = Field(default=None, description="PSRP configuration name (JEA endpoint)")

    @field_validator("client_machine")
    @classmethod
    def _client_machine(cls, value: str) -> str:
        if "|" in value:
            raise ValueError(
                "local mode ('HOST|LocalMachine') is not supported by this version; give the"
                " host name and reach it over WinRM"
            )
        return validate_host(value)

    @field_validator("port", mode="before")
    @classmethod
    def _port_range(cls, value: Any) -> Any:
        # Runs before the ge/le constraints (kept for the JSON Schema) to say what to do.
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
            raise ValueError(
                f"{value} is not a TCP port; give 1-65535, or leave it out for the protocol's"
                " default (5985 http, 5986 https)"
            )
        return value

    @field_validator("store_path", mode="before")
    @classmethod
    def _store_path_given(cls, value: Any) -> Any:
        # Runs before min_length (kept for the JSON Schema) so '' gets the same advice as '  '.
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                ("is empty" if not value else "is blank")
                + "; name a LocalMachine store such as My, Root or WebHosting"
            )
        return value

    @field_validator("store_path")
    @classmethod
    def _store_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank; name a LocalMachine store such as My, Root or WebHosting")
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        return value

    @field_validator("jea_endpoint")
    @classmethod
    def _jea(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", value):
            raise ValueError("must be a PSRP configuration name: letters, digits, '_', '.', '-'")
        return value

    @property
    def effective_port(self) -> int:
        """The WinRM port: ``port`` or the protocol's default (5985 http, 5986 https)."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.protocol]

    @property
    def host_key(self) -> str:
        """The key per-host limits use: the lower-cased host name or IP literal."""
        return self.client_machine.lower()


class _JobBase(_Model):
    job_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Idempotency key")
    schema_version: Literal[1] = SCHEMA_VERSION
    submitted_at: AwareDatetime | None = Field(default=None, description="Set by the producer client")
    store: StoreRef


class InventoryJob(_JobBase):
    """List every certificate in the store (WinCert: all certificates in the store path)."""

    job_type: Literal["inventory"]

    @model_validator(mode="after")
    def _supported(self) -> InventoryJob:
        if self.store.store_type is not StoreType.WIN_CERT:
            raise ValueError(
                f"store.store_type: inventory of {self.store.store_type.value} stores is not"
                " supported by this version; use WinCert"
            )
        return self


# One member today; new job types join with ``InventoryJob | OtherJob``.
Job = RootModel[Annotated[InventoryJob, Field(discriminator="job_type")]]
"""The job union; ``Job.model_validate(data).root`` is the concrete job model."""

AnyJob = InventoryJob
"""Any concrete job model (a plain union of the members of :data:`Job`)."""

_JOB_ADAPTER: TypeAdapter[Any] = TypeAdapter(Job)


def parse_job(data: Any) -> AnyJob:
    """Validate a JSON-compatible dict (or JSON text) as a job.

    Raises:
        pydantic.ValidationError: naming each invalid field.
    """
    if isinstance(data, str | bytes):
        return Job.model_validate_json(data).root
    return Job.model_validate(data).root


def job_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of :data:`Job`, for non-Python producers."""
    schema: dict[str, Any] = Job.model_json_schema()
    schema["title"] = "WinCertJob"
    return schema


class SubjectAltName(_Model):
    """One subject alternative name, structured (never localized display text)."""

    type: Literal["dns", "ip", "email", "upn", "uri", "dn", "other"]
    value: str


class CertificateItem(_Model):
    """One certificate as inventory reports it.

    ``thumbprint`` is 40 upper-case hex (SHA-1 of ``der_b64``'s bytes); ``serial_number`` is
    upper-case hex; times are UTC; ``der_b64`` is standard base64 of the DER encoding.
    ``alias`` follows the peer's format for the store type (WinCert: the thumbprint).
    """

    alias: str
    thumbprint: str
    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    has_private_key: bool
    friendly_name: str = ""
    key_algorithm: str = ""
    key_size: int | None = None
    sans: list[SubjectAltName] = Field(default_factory=list)
    der_b64: str
    parameters: dict[str, str | int | bool | None] = Field(default_factory=dict)


class JobResult(_Model):
    """The outcome of one job. Published to the result backend and the results stream.

    ``duration_seconds`` covers the job's own run (slot held), not the time queued.
    ``attempts`` counts deliveries including slot-wait re-publishes.
    """

    job_id: uuid.UUID
    job_type: JobType
    store_type: StoreType | None = None
    client_machine: str | None = None
    store_path: str | None = None
    status: Status
    code: ResultCode
    message: str
    warnings: list[str] = Field(default_factory=list)
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    duration_seconds: float | None = None
    attempts: int = 1
    worker: str | None = None
    items: list[CertificateItem] | None = None
