"""Job results: :class:`JobResult` and the structured parts it carries (inventory items, IISU
SSL mappings, WinSQL key access, inventory changes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from producer.codes import ResultCode
from producer.messages.base import _Model
from producer.messages.enums import JobType, Status, StoreType
from producer.messages.sans import SubjectAltName


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
