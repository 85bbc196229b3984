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
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SecretStr,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails

from producer.codes import ResultCode
from producer.entry_parameters import (
    IisAlias,
    IisParameters,
    SqlParameters,
    WinCertParameters,
    parse_iis_alias,
    thumbprint_alias,
    validate_provider_name,
)
from producer.jsontypes import JsonBool, JsonDateTime, JsonInt, JsonUuid, NotBool
from producer.subject import parse_subject
from producer.validation import CONTROL_CHARS, validate_host
from producer.validation import THUMBPRINT_RE as THUMBPRINT_RE  # re-exported
from producer.validation import normalize_thumbprint as normalize_thumbprint  # re-exported

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

_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


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
    ADD = "add"
    REMOVE = "remove"
    REENROLLMENT = "reenrollment"
    REENROLLMENT_COMPLETE = "reenrollment_complete"


class Protocol(StrEnum):
    """Transport: WinRM ``http`` (port 5985, message encryption) or ``https`` (port 5986), or
    ``ssh`` (port 22: PowerShell's SSH subsystem, out-of-process PSRP over the SSH channel)."""

    HTTP = "http"
    HTTPS = "https"
    SSH = "ssh"


class AuthMethod(StrEnum):
    """WinRM authentication methods, as pypsrp names them."""

    NEGOTIATE = "negotiate"
    NTLM = "ntlm"
    KERBEROS = "kerberos"
    BASIC = "basic"
    CREDSSP = "credssp"
    CERTIFICATE = "certificate"
    PUBLICKEY = "publickey"
    """SSH public-key authentication (``protocol: ssh`` only; the default there)."""


class Status(StrEnum):
    """Overall job outcome."""

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


DEFAULT_PORTS = {Protocol.HTTP: 5985, Protocol.HTTPS: 5986, Protocol.SSH: 22}
_LOCAL_NAMES = frozenset({"localhost", "localmachine"})
_STORE_PATHS: dict[StoreType, tuple[str, ...]] = {
    StoreType.IISU: ("My", "WebHosting"),  # peer manifest: IISU store path is My or WebHosting
    StoreType.WIN_SQL: ("My",),  # SQL Server reads its certificate from LocalMachine\My
}


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
        if not _CREDENTIAL_NAME.fullmatch(value):
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
        if CONTROL_CHARS.search(value):
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
    client_machine: str = Field(
        description="Host name or IP address of the Windows host; 'HOST|LocalMachine', 'localhost' or"
        " 'localmachine' for local mode (the worker's own machine, no WinRM)"
    )
    store_path: str = Field(
        min_length=1,
        max_length=256,
        description="LocalMachine store name, e.g. My, Root, WebHosting, 'Remote Desktop'",
    )
    protocol: Protocol = Protocol.HTTPS
    port: JsonInt | None = Field(
        default=None, ge=1, le=65535, description="WinRM port; default 5985 (http) / 5986 (https)"
    )
    auth: AuthMethod = AuthMethod.NEGOTIATE
    credential: Credential | None = Field(
        default=None, description="None: the worker's default credential (WINCERT_DEFAULT_CREDENTIAL)"
    )
    cert_validation: JsonBool = Field(
        default=True, description="Validate the HTTPS listener certificate (CA bundle on the worker)"
    )
    spn_with_port: JsonBool = Field(
        default=False, description="Kerberos SPN HTTP/host:port (peer 'spnwithport')"
    )
    spn_service: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # jobs without it read as before (older workers)
        max_length=64,
        description="Kerberos SPN service class; default HTTP (what Windows' WinRM client asks for)",
    )
    spn_hostname: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Kerberos SPN host name when it differs from client_machine (an alias, a"
        " CNAME, or client_machine given as an IP address)",
    )
    jea_endpoint: str | None = Field(default=None, description="PSRP configuration name (JEA endpoint)")
    restart_service: JsonBool = Field(
        default=False,
        description="WinSQL: restart the SQL Server service after binding (peer 'RestartService')",
    )

    @field_validator("client_machine")
    @classmethod
    def _client_machine(cls, value: str) -> str:
        host, bar, scope = value.partition("|")
        if bar:
            if scope.strip().lower() != "localmachine" or "|" in scope:
                raise ValueError(
                    f"{value!r}: after '|' only 'LocalMachine' is allowed (local mode, the peer's"
                    " 'HOST|LocalMachine'); give a host name alone to reach it over WinRM"
                )
            if host.strip().lower() not in _LOCAL_NAMES:
                validate_host(host)
            return f"{host.strip()}|LocalMachine"
        if value.strip().lower() in _LOCAL_NAMES:
            return value.strip()
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
    def _store_path(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("is blank; name a LocalMachine store such as My, Root or WebHosting")
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        store_type = info.data.get("store_type")
        allowed = _STORE_PATHS.get(store_type) if isinstance(store_type, StoreType) else None
        if allowed is not None and value.lower() not in {p.lower() for p in allowed}:
            raise ValueError(f"{value!r} is not valid for {store_type} stores; use {' or '.join(allowed)}")
        return value

    @field_validator("spn_service")
    @classmethod
    def _spn_service(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError(
                f"{value!r} is not an SPN service class; use letters, digits, '_', '.', '-'"
                " (e.g. HTTP or WSMAN)"
            )
        return value

    @field_validator("spn_hostname")
    @classmethod
    def _spn_hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = validate_host(value)
        if _is_ip_literal(host):
            raise ValueError(
                f"{value!r} is an IP address; a Kerberos SPN names the host (HTTP/web01.contoso.com),"
                " so give the host's DNS name"
            )
        return host

    @field_validator("jea_endpoint")
    @classmethod
    def _jea(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
            raise ValueError("must be a PSRP configuration name: letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _ssh_auth_default(cls, data: Any) -> Any:
        # protocol ssh authenticates with a key: auth defaults to publickey there
        if isinstance(data, dict) and data.get("protocol") == "ssh" and data.get("auth") is None:
            return {**data, "auth": "publickey"}
        return data

    @model_validator(mode="after")
    def _auth_fits_transport(self) -> StoreRef:
        if self.is_local:
            return self
        if (self.protocol is Protocol.SSH) != (self.auth is AuthMethod.PUBLICKEY):
            raise ValueError(
                "protocol 'ssh' authenticates with an SSH key (auth 'publickey', the default for ssh),"
                " and auth 'publickey' needs protocol 'ssh'; use http/https for the WinRM auth methods"
            )
        if self.protocol is Protocol.SSH and self.jea_endpoint is not None:
            raise ValueError(
                "jea_endpoint cannot be combined with protocol 'ssh' (PowerShell's SSH subsystem serves"
                " the default session configuration only, as for the Keyfactor orchestrator); use"
                " WinRM (http/https) to reach a JEA endpoint"
            )
        if self.auth is AuthMethod.BASIC and self.protocol is Protocol.HTTP:
            raise ValueError(
                "auth 'basic' over protocol 'http' would send the password unencrypted (WinRM refuses"
                " it by default); use protocol https, or negotiate/ntlm/kerberos over http"
            )
        if self.auth is AuthMethod.CERTIFICATE and self.protocol is not Protocol.HTTPS:
            raise ValueError(
                "auth 'certificate' (WinRM client certificate mapping) needs protocol 'https': the"
                " certificate is presented in the TLS handshake"
            )
        return self

    @model_validator(mode="after")
    def _local_mode(self) -> StoreRef:
        if self.is_local and self.jea_endpoint is not None:
            raise ValueError(
                "jea_endpoint cannot be combined with local mode (client_machine"
                f" {self.client_machine!r}); JEA endpoints are reached over WinRM"
            )
        return self

    @model_validator(mode="after")
    def _restart_service_for_sql(self) -> StoreRef:
        if self.restart_service and self.store_type is not StoreType.WIN_SQL:
            raise ValueError("restart_service applies to WinSQL stores only; leave it false")
        return self

    @property
    def spn(self) -> str:
        """The Kerberos SPN a client asks for: ``<spn_service or HTTP>/<spn_hostname or host>``,
        with ``:<port>`` when ``spn_with_port`` (Windows' IncludePortInSPN)."""
        name = self.spn_hostname or self.host
        port = f":{self.effective_port}" if self.spn_with_port else ""
        return f"{self.spn_service or 'HTTP'}/{name}{port}"

    @property
    def effective_port(self) -> int:
        """The WinRM port: ``port`` or the protocol's default (5985 http, 5986 https)."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.protocol]

    @property
    def is_local(self) -> bool:
        """Local mode: ``HOST|LocalMachine``, ``localhost`` or ``localmachine`` (case-insensitive,
        as the peer's ``PSHelper``): the job runs on the worker's own machine through a local
        PowerShell process speaking out-of-process PSRP, without WinRM."""
        host, bar, _ = self.client_machine.partition("|")
        return bool(bar) or host.lower() in _LOCAL_NAMES

    @property
    def host(self) -> str:
        """The real host: the part before ``|`` (the peer keeps ``|LocalMachine`` only to make
        the store's identity unique)."""
        return self.client_machine.partition("|")[0]

    @property
    def host_key(self) -> str:
        """The key per-host limits use: the lower-cased real host (the part before ``|``)."""
        return self.host.lower()


class _JobBase(_Model):
    job_id: JsonUuid = Field(default_factory=uuid.uuid4, description="Idempotency key")
    schema_version: Annotated[Literal[1], NotBool] = SCHEMA_VERSION
    submitted_at: JsonDateTime | None = Field(default=None, description="Set by the producer client")
    store: StoreRef


class SubjectAltName(_Model):
    """One subject alternative name, structured (never localized display text)."""

    type: Literal["dns", "ip", "email", "upn", "uri", "dn", "other"]
    value: str


class InventoryJob(_JobBase):
    """List the store's certificates: WinCert every certificate in the store path; IISU every
    https binding with a certificate (alias ``THUMB:site:ip:port:host``); WinSQL every
    certificate an instance uses (alias = thumbprint, ``InstanceName`` parameter).

    ``include_der`` false: items carry ``der_b64`` empty, and a WinCert inventory becomes
    incremental (the host sends only the certificates the worker's inventory state does not know;
    see docs/incremental-inventory.md)."""

    job_type: Literal["inventory"]
    include_der: bool = Field(
        strict=True,
        default=True,
        description="false: items carry der_b64 \"\" and WinCert inventories ask the host only for"
        " certificates the worker does not already know (incremental inventory)",
    )

    @model_serializer(mode="wrap")
    def _omit_default_include_der(self, handler: SerializerFunctionWrapHandler) -> Any:
        """``include_der`` is left out when true (the default), so a job from this producer
        stays valid for workers that predate the field (rolling upgrades)."""
        data = handler(self)
        if self.include_der and isinstance(data, dict):
            data.pop("include_der", None)
        return data


_ENTRY_MODELS: dict[str, type[WinCertParameters | IisParameters | SqlParameters]] = {
    StoreType.WIN_CERT.value: WinCertParameters,
    StoreType.IISU.value: IisParameters,
    StoreType.WIN_SQL.value: SqlParameters,
}


def _typed_entry_parameters(model_name: str, data: Any) -> Any:
    """Validate ``entry_parameters`` with the store type's model (errors keep the field path)."""
    if not isinstance(data, dict) or not isinstance(data.get("entry_parameters"), dict):
        return data
    store = data.get("store")
    store_type = store.get("store_type") if isinstance(store, dict) else getattr(store, "store_type", None)
    model = _ENTRY_MODELS.get(str(getattr(store_type, "value", store_type)))
    if model is None:
        return data  # the store's own validation reports the bad store type
    try:
        entry = model.model_validate(data["entry_parameters"])
    except ValidationError as exc:
        raise ValidationError.from_exception_data(
            model_name,
            [
                cast(InitErrorDetails, {**e, "loc": ("entry_parameters", *e["loc"])})
                for e in exc.errors(include_url=False)
            ],
        ) from None
    return {**data, "entry_parameters": entry}


def _check_entry_type(store: StoreRef, entry: Any) -> None:
    expected = _ENTRY_MODELS[store.store_type.value]
    if entry is not None and not isinstance(entry, expected):
        raise ValueError(
            f"entry_parameters are {type(entry).__name__} but the store is {store.store_type.value};"
            f" give {expected.__name__} fields"
        )


class CertificateData(_Model):
    """The certificate to add: a PKCS#12 (``.pfx``/``.p12``), DER, PEM or PKCS#7 file.

    The file travels sealed like a password: ``contents_encrypted`` is a Fernet token (made with
    ``WINCERT_SECRET_KEYS``) of the file as text — base64 of its bytes, or PEM text;
    ``contents_plaintext`` (the same text) only where plaintext secrets are explicitly allowed.
    The PKCS#12 password: ``password_encrypted`` (a Fernet token of the UTF-8 password, which may
    be the empty password) or
    ``password_plaintext``; give neither for "no password" — which Windows treats differently
    from the empty password.
    """

    contents_encrypted: str | None = Field(
        default=None, description="Fernet token of the file as base64 (or PEM) text"
    )
    contents_plaintext: SecretStr | None = Field(default=None, description="base64 or PEM text")
    password_encrypted: str | None = Field(default=None, description="Fernet token of the password")
    password_plaintext: SecretStr | None = Field(default=None, description="PKCS#12 password")

    @model_validator(mode="after")
    def _one_contents(self) -> CertificateData:
        if (self.contents_encrypted is None) == (self.contents_plaintext is None):
            raise ValueError(
                "give exactly one of contents_encrypted (a Fernet token of the file) or"
                " contents_plaintext (base64/PEM text, only where explicitly allowed)"
            )
        if self.password_encrypted is not None and self.password_plaintext is not None:
            raise ValueError("give at most one of password_encrypted or password_plaintext")
        return self

    @field_serializer("contents_plaintext", "password_plaintext", when_used="json")
    def _reveal_for_wire(self, value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()

    @property
    def has_plaintext(self) -> bool:
        """Whether any part travels in plaintext."""
        return self.contents_plaintext is not None or self.password_plaintext is not None


class AddJob(_JobBase):
    """Management Add: import a certificate into the store, then bind it (IISU, WinSQL).

    Idempotent: a certificate already present (same thumbprint, with its key) succeeds with
    ``already_present`` unless ``overwrite``. ``renewal_thumbprint`` (or an ``alias`` naming an
    old thumbprint, as the peer sends it) marks a renewal: IISU rebinds and deletes the old
    certificate when nothing uses it any more; WinSQL rebinds only instances bound to it.
    """

    job_type: Literal["add"]
    certificate: CertificateData
    entry_parameters: WinCertParameters | IisParameters | SqlParameters | None = None
    overwrite: JsonBool = Field(default=False, description="Replace a certificate already present")
    include_chain: JsonBool = Field(
        default=False, description="Also add intermediates to CA and self-signed roots to Root"
    )
    exportable: JsonBool = Field(default=False, description="Import the private key as exportable")
    rewrap_legacy_pfx: JsonBool = Field(
        default=False,
        description="Re-wrap PBES2/AES PKCS#12 files with 3DES/SHA1 for hosts older than Server 2019",
    )
    allow_takeover: JsonBool = Field(
        default=False,
        description="IISU: bind even when another site owns the same ip:port (or host:port with SNI)",
    )
    renewal_thumbprint: str | None = Field(default=None, description="The certificate this one renews")
    alias: str | None = Field(default=None, description="Peer alias; its thumbprint part marks a renewal")
    check: JsonBool = Field(
        default=False,
        exclude_if=lambda value: not value,  # jobs without it read as before (older workers)
        description="Check mode: report what would change on the host and change nothing",
    )

    @model_validator(mode="before")
    @classmethod
    def _entry(cls, data: Any) -> Any:
        return _typed_entry_parameters(cls.__name__, data)

    @field_validator("renewal_thumbprint")
    @classmethod
    def _renewal(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else normalize_thumbprint(value)

    @model_validator(mode="after")
    def _consistent(self) -> AddJob:
        _check_entry_type(self.store, self.entry_parameters)
        if self.alias and self.alias.strip() and self.renewal_thumbprint is None:
            try:
                renewal = thumbprint_alias(self.alias)
            except ValueError:
                raise ValueError(
                    f"alias {self.alias!r} does not start with a thumbprint; for a renewal give the old"
                    " certificate's thumbprint (or its IISU alias), otherwise leave alias empty"
                ) from None
            object.__setattr__(self, "renewal_thumbprint", renewal)
        return self

    @property
    def entry(self) -> WinCertParameters | IisParameters | SqlParameters:
        """The entry parameters, or the store type's defaults."""
        return self.entry_parameters or _ENTRY_MODELS[self.store.store_type.value]()


class RemoveJob(_JobBase):
    """Management Remove: unbind (IISU, WinSQL) and delete the certificate ``alias`` names.

    ``alias``: WinCert/WinSQL the thumbprint (spaces, lower case and the invisible marks the
    Windows certificate UI adds are normalised); IISU ``THUMB:site:ip:port:host``. Idempotent:
    an absent certificate succeeds with ``already_absent``.
    """

    job_type: Literal["remove"]
    alias: str = Field(min_length=1, max_length=1024)
    entry_parameters: WinCertParameters | IisParameters | SqlParameters | None = None
    check: JsonBool = Field(
        default=False,
        exclude_if=lambda value: not value,  # jobs without it read as before (older workers)
        description="Check mode: report what would change on the host and change nothing",
    )

    @model_validator(mode="before")
    @classmethod
    def _entry(cls, data: Any) -> Any:
        return _typed_entry_parameters(cls.__name__, data)

    @model_validator(mode="after")
    def _alias(self) -> RemoveJob:
        _check_entry_type(self.store, self.entry_parameters)
        try:
            if self.store.store_type is StoreType.IISU:
                normalized = str(parse_iis_alias(self.alias))
            else:
                normalized = normalize_thumbprint(self.alias)
        except ValueError as exc:
            raise ValueError(f"alias: {exc}") from None
        object.__setattr__(self, "alias", normalized)
        return self

    @property
    def thumbprint(self) -> str:
        """The thumbprint to remove (upper-case hex)."""
        return thumbprint_alias(self.alias)

    @property
    def iis_alias(self) -> IisAlias:
        """The parsed IISU alias (IISU stores only)."""
        return parse_iis_alias(self.alias)


SAN_KEYWORDS = {
    "dns": "dns",
    "ip": "ip",
    "ipaddress": "ip",
    "ip4": "ip",
    "ip6": "ip",
    "email": "email",
    "rfc822": "email",
    "upn": "upn",
    "uri": "uri",
    "url": "uri",
}
"""Keyword of a legacy ``sans`` string (``dns=a&ip=1.2.3.4``, case-insensitive) → SAN kind;
the job schema (producer/schema.py) builds its pattern from the same table."""


def parse_legacy_sans(text: str) -> list[dict[str, str]]:
    """The peer's legacy SAN string ``dns=a.com&dns=b.com&ip=10.0.0.1`` as structured entries.

    Keys are matched case-insensitively with the peer's ``SANBuilder`` mapping (``ip``/``ip4``/
    ``ip6``/``ipaddress`` → ip, ``email``/``rfc822`` → email, ``uri``/``url`` → uri).

    Raises:
        ValueError: an entry is not ``type=value`` or names an unsupported type.
    """
    entries = []
    for part in (p for p in text.split("&") if p.strip()):
        key, sep, value = part.partition("=")
        kind = SAN_KEYWORDS.get(key.strip().lower())
        if not sep or kind is None or not value.strip():
            raise ValueError(
                f"SAN entry {part!r} is not type=value with a type of dns, ip, email, upn or uri"
            )
        entries.append({"type": kind, "value": value.strip()})
    return entries


def completion_job_id(job_id: uuid.UUID) -> uuid.UUID:
    """The id of the ``reenrollment_complete`` job that chained signing runs for the phase-1
    ``job_id``: ``uuid5(job_id, "complete")`` (deterministic, so producers, workers and
    redeliveries agree on it)."""
    return uuid.uuid5(job_id, "complete")


class SignerRef(_Model):
    """A Celery task that signs a CSR: called as ``task(csr_pem: str, job_id: str) -> str`` (the
    issued certificate as PEM, optionally followed by its chain). Chained signing: the worker
    runs generate → sign → install without another producer round trip."""

    task: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
    queue: str | None = Field(default=None, max_length=200)


class ReenrollmentJob(_JobBase):
    """Reenrollment phase 1 (on-device key generation): the host creates the key pair in its
    machine key store and returns a PKCS#10 CSR (PEM) in the result's ``csr``.

    The pending key stays in the host's ``REQUEST`` store, tagged with ``job_id``: a redelivered
    job returns the same CSR instead of creating a second key. With ``signer`` the worker chains
    signing and installation (``reenrollment_complete`` with the same entry parameters).
    """

    job_type: Literal["reenrollment"]
    subject: str = Field(
        min_length=1,
        max_length=1024,
        description="X.500 subject, e.g. 'CN=web01.contoso.com, O=\"Contoso, Inc\"'",
    )
    key_algorithm: Literal["RSA", "ECDSA_P256", "ECDSA_P384"] = "RSA"
    key_length: JsonInt | None = Field(
        default=None, description="RSA key size in bits (2048 default); ECDSA: none"
    )
    provider_name: str | None = Field(
        default=None, description="KSP/CSP; default 'Microsoft Software Key Storage Provider'"
    )
    sans: list[SubjectAltName] = Field(default_factory=list, description="dns, ip, email, upn, uri")
    entry_parameters: WinCertParameters | IisParameters | SqlParameters | None = None
    signer: SignerRef | None = None
    allow_takeover: JsonBool = False

    @model_validator(mode="before")
    @classmethod
    def _before(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("sans"), str):
            data = {**data, "sans": parse_legacy_sans(data["sans"])}
        return _typed_entry_parameters(cls.__name__, data)

    @field_validator("provider_name")
    @classmethod
    def _provider_name(cls, value: str | None) -> str | None:
        return validate_provider_name(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        parse_subject(value)
        return value

    @field_validator("sans")
    @classmethod
    def _sans(cls, value: list[SubjectAltName]) -> list[SubjectAltName]:
        for san in value:
            if san.type not in {"dns", "ip", "email", "upn", "uri"}:
                raise ValueError(f"SAN type {san.type!r} cannot be requested; use dns, ip, email, upn or uri")
            if san.type == "ip":
                try:
                    ipaddress.ip_address(san.value)
                except ValueError:
                    raise ValueError(f"SAN ip {san.value!r} is not an IP address") from None
            if CONTROL_CHARS.search(san.value) or not san.value.strip():
                raise ValueError(f"SAN {san.type} value {san.value!r} is empty or has control characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReenrollmentJob:
        _check_entry_type(self.store, self.entry_parameters)
        if self.key_algorithm == "RSA":
            if self.key_length is not None and self.key_length not in (2048, 3072, 4096):
                raise ValueError(f"key_length {self.key_length} is not 2048, 3072 or 4096 (RSA)")
        elif self.key_length is not None:
            raise ValueError(f"key_length applies to RSA only; {self.key_algorithm} fixes the key size")
        return self

    @property
    def entry(self) -> WinCertParameters | IisParameters | SqlParameters:
        """The entry parameters, or the store type's defaults."""
        return self.entry_parameters or _ENTRY_MODELS[self.store.store_type.value]()

    @property
    def completion_job_id(self) -> uuid.UUID:
        """The id of the ``reenrollment_complete`` job chained signing runs for this job."""
        return completion_job_id(self.job_id)


class ReenrollmentCompleteJob(_JobBase):
    """Reenrollment phase 2: install the signed certificate so it pairs with its pending key,
    confirm ``has_private_key``, then bind it (IISU with the entry parameters, WinSQL honouring
    ``restart_service``). A certificate that matches no pending request fails with
    ``no_matching_request``."""

    job_type: Literal["reenrollment_complete"]
    certificate: str = Field(min_length=1, description="The issued certificate: PEM or base64 DER")
    chain: list[str] = Field(default_factory=list, description="Issuer certificates (PEM or base64 DER)")
    request_job_id: JsonUuid | None = Field(default=None, description="The phase 1 job, if known")
    entry_parameters: WinCertParameters | IisParameters | SqlParameters | None = None
    include_chain: JsonBool = False
    allow_takeover: JsonBool = False

    @model_validator(mode="before")
    @classmethod
    def _entry(cls, data: Any) -> Any:
        return _typed_entry_parameters(cls.__name__, data)

    @model_validator(mode="after")
    def _consistent(self) -> ReenrollmentCompleteJob:
        _check_entry_type(self.store, self.entry_parameters)
        return self

    @property
    def entry(self) -> WinCertParameters | IisParameters | SqlParameters:
        """The entry parameters, or the store type's defaults."""
        return self.entry_parameters or _ENTRY_MODELS[self.store.store_type.value]()


Job = RootModel[
    Annotated[
        InventoryJob | AddJob | RemoveJob | ReenrollmentJob | ReenrollmentCompleteJob,
        Field(discriminator="job_type"),
    ]
]
"""The job union; ``Job.model_validate(data).root`` is the concrete job model."""

AnyJob = InventoryJob | AddJob | RemoveJob | ReenrollmentJob | ReenrollmentCompleteJob
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
    """JSON Schema (draft 2020-12) of :data:`Job`, for non-Python producers: as strict as these
    models (:mod:`producer.schema`, which also has the result schema)."""
    from producer.schema import job_schema  # the schema module imports this one

    return job_schema()


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


class KeyAccess(_Model):
    """WinSQL: an account SQL Server may load the private key as, and whether this job gave it
    read access (``granted`` false: it could already read the key)."""

    instance_name: str
    account: str = Field(description="As Windows names it (localized for well-known accounts)")
    sid: str = Field(description="e.g. S-1-5-80-... for NT SERVICE\\MSSQL$<instance>, S-1-5-18 for SYSTEM")
    granted: bool


class SslMapping(_Model):
    """IISU inventory: one http.sys SSL certificate mapping of the host, with or without an IIS
    binding (``orphan``: no https binding uses it; http.sys still serves its certificate)."""

    kind: Literal["ipport", "hostnameport", "ccs"] = Field(
        description="ipport: IP:port (0.0.0.0 = all addresses); hostnameport: SNI host:port;"
        " ccs: central certificate store port"
    )
    endpoint: str = Field(description="e.g. 192.0.2.10:443, www.example.test:443, or the port for ccs")
    thumbprint: str = Field(description="Upper-case hex; empty when the mapping names none")
    store_name: str
    iis_bindings: list[str] = Field(default_factory=list, description="'<site> <ip:port:host>' using it")
    orphan: bool


class InventoryChanges(_Model):
    """What an inventory found changed since the store's previous successful inventory known to
    the workers (thumbprints upper-case hex, sorted). Counts are of distinct thumbprints."""

    added: int = Field(ge=0)
    removed: int = Field(ge=0)
    unchanged: int = Field(ge=0)
    added_thumbprints: list[str] = Field(default_factory=list)
    removed_thumbprints: list[str] = Field(default_factory=list)


class JobResult(_Model):
    """The outcome of one job. Kept under ``wincert:job:<job_id>:result`` and announced on the
    results stream (:mod:`producer.result_store`).

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
    thumbprint: str | None = Field(
        default=None, description="Add: the certificate installed; Remove: the one removed (upper hex)"
    )
    items: list[CertificateItem] | None = None
    changes: InventoryChanges | None = Field(
        default=None,
        description="Inventory: added / removed / unchanged since the previous inventory the workers"
        " recorded (null: none recorded, or the inventory failed)",
    )
    csr: str | None = Field(default=None, description="Reenrollment: the PKCS#10 request (PEM)")
    ssl_mappings: list[SslMapping] | None = Field(
        default=None, description="IISU inventory: every http.sys SSL mapping of the host, orphans included"
    )
    key_access: list[KeyAccess] | None = Field(
        default=None,
        description="WinSQL Add / reenrollment: per instance, the accounts with read access to the key",
    )
