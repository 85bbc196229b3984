"""Reenrollment (on-device key generation) in two phases: the CSR job, the signed certificate's
completion job, and the signer a worker may chain between them."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from producer.entry_parameters import IisParameters, SqlParameters, WinCertParameters, validate_provider_name
from producer.jsontypes import JsonBool, JsonInt, JsonUuid
from producer.messages.base import _Model
from producer.messages.job_base import _check_entry_type, _EntryJob, _typed_entry_parameters
from producer.messages.sans import SubjectAltName, parse_legacy_sans
from producer.subject import parse_subject
from producer.validation import CONTROL_CHARS


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


class ReenrollmentJob(_EntryJob):
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
    def _entry(cls, data: Any) -> Any:  # replaces _EntryJob's: legacy sans first
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
    def completion_job_id(self) -> uuid.UUID:
        """The id of the ``reenrollment_complete`` job chained signing runs for this job."""
        return completion_job_id(self.job_id)


class ReenrollmentCompleteJob(_EntryJob):
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

    @model_validator(mode="after")
    def _consistent(self) -> ReenrollmentCompleteJob:
        _check_entry_type(self.store, self.entry_parameters)
        return self
