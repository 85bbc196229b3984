"""The inventory and management (Add, Remove) jobs, and the sealed certificate an Add carries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from producer.entry_parameters import (
    IisAlias,
    IisParameters,
    SqlParameters,
    WinCertParameters,
    parse_iis_alias,
    thumbprint_alias,
)
from producer.jsontypes import JsonBool
from producer.messages.base import _Model
from producer.messages.enums import StoreType
from producer.messages.job_base import (
    _check_entry_type,
    _EntryJob,
    _JobBase,
    check_mode_field,
)
from producer.validation import normalize_thumbprint


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
        description='false: items carry der_b64 "" and WinCert inventories ask the host only for'
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


class AddJob(_EntryJob):
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
    check: JsonBool = check_mode_field()

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


class RemoveJob(_EntryJob):
    """Management Remove: unbind (IISU, WinSQL) and delete the certificate ``alias`` names.

    ``alias``: WinCert/WinSQL the thumbprint (spaces, lower case and the invisible marks the
    Windows certificate UI adds are normalised); IISU ``THUMB:site:ip:port:host``. Idempotent:
    an absent certificate succeeds with ``already_absent``.
    """

    job_type: Literal["remove"]
    alias: str = Field(min_length=1, max_length=1024)
    entry_parameters: WinCertParameters | IisParameters | SqlParameters | None = None
    check: JsonBool = check_mode_field()

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
