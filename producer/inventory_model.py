"""The inventory state's document model and a read-only view of it (no worker imports).

The state itself — the latest inventory of every store, kept by the worker in the Redis hash
:data:`INVENTORY_KEY` — is described and written by :mod:`worker.inventory_state`. This module
holds what readers on the producer side need too (``wincert expiring``, ``wincert status``):
the pydantic models of a stored document, validation of what is read back (untrusted input),
and :class:`InventoryReader`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from producer.messages import StoreRef, StoreType, SubjectAltName

log = logging.getLogger(__name__)

INVENTORY_KEY = "wincert:inventory"
"""The Redis hash holding one JSON document per store (field: :func:`store_id`)."""

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""Documents read back larger than this are refused (a store of ~80 000 certificates)."""

CN_MAX = 256
"""Longest subject CN kept (characters)."""

_THUMBPRINT = re.compile(r"[0-9A-F]{40}")


def is_thumbprint(value: str) -> bool:
    """Whether ``value`` is what :attr:`CertificateEntry.thumbprint` accepts (40 upper-case hex;
    :func:`worker.inventory_entries.entry_from_item` checks its entries with this very test)."""
    return _THUMBPRINT.fullmatch(value) is not None


class InvalidStateError(ValueError):
    """A document read from Redis is not a valid :class:`StoreInventory`."""


class CertificateDetails(BaseModel):
    """The parsed fields of a certificate that never change for a thumbprint (no DER), kept so
    incremental inventory can report a known certificate without the host sending it again.

    Times are Unix seconds (UTC); ``serial_number`` upper-case hex. The host's mutable
    properties (``HasPrivateKey``, ``FriendlyName``) are never kept: every inventory asks for them.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    subject: str = Field(max_length=4096)
    issuer: str = Field(max_length=4096)
    serial_number: str = Field(pattern=r"^[0-9A-F]{1,128}$")
    not_before: float = Field(ge=0, le=253402300799)
    key_algorithm: str = Field(default="", max_length=256)
    key_size: int | None = Field(default=None, ge=0, le=1_000_000)
    sans: list[SubjectAltName] = Field(default_factory=list, max_length=1000)


class CertificateEntry(BaseModel):
    """One certificate of a store as last seen (see the module docstring for units)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    alias: str = Field(min_length=1, max_length=1024)
    thumbprint: str
    subject_cn: str = Field(default="", max_length=CN_MAX)
    not_after: float = Field(ge=0, le=253402300799)  # Unix seconds, up to 9999-12-31
    binding: str | None = Field(default=None, max_length=1024)
    seen: float = Field(ge=0)
    details: CertificateDetails | None = None
    """Recorded by a full inventory; None when a job recorded the entry (an add): incremental
    inventory then asks the host for the certificate's full details."""

    @field_validator("thumbprint")
    @classmethod
    def _thumbprint(cls, value: str) -> str:
        if not is_thumbprint(value):
            raise ValueError("must be 40 upper-case hex digits")
        return value

    @property
    def not_after_datetime(self) -> datetime:
        """``not_after`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.not_after, UTC)


class StoreInventory(BaseModel):
    """The latest known content of one store (the JSON document of the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = 1
    store_type: StoreType
    host: str = Field(min_length=1, max_length=512)
    store_path: str = Field(min_length=1, max_length=256)
    last_inventory: float | None = Field(default=None, ge=0)
    last_failure: float | None = Field(default=None, ge=0)
    last_failure_code: str | None = Field(default=None, max_length=64)
    updated: float = Field(default=0.0, ge=0)
    certificates: list[CertificateEntry] = Field(default_factory=list)
    removed: dict[str, float] = Field(default_factory=dict)

    @property
    def store_id(self) -> str:
        """The hash field of this store."""
        return store_id(self.store_type, self.host, self.store_path)

    @property
    def last_inventory_datetime(self) -> datetime | None:
        """``last_inventory`` as an aware UTC datetime (None: never inventoried successfully)."""
        return None if self.last_inventory is None else datetime.fromtimestamp(self.last_inventory, UTC)

    def thumbprints(self) -> set[str]:
        """The distinct thumbprints in the store (what incremental inventory compares against)."""
        return {c.thumbprint for c in self.certificates}


@dataclass(frozen=True)
class ExpiringCertificate:
    """A certificate from the state with its store (what ``wincert expiring`` lists)."""

    store_type: str
    host: str
    store_path: str
    alias: str
    thumbprint: str
    subject_cn: str
    not_after: datetime

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict (``not_after`` ISO 8601 UTC)."""
        return {
            "store_type": self.store_type,
            "host": self.host,
            "store_path": self.store_path,
            "alias": self.alias,
            "thumbprint": self.thumbprint,
            "subject_cn": self.subject_cn,
            "not_after": self.not_after.isoformat().replace("+00:00", "Z"),
        }


def store_id(store_type: StoreType | str, host: str, store_path: str) -> str:
    """``<store type>|<host lower>|<store path lower>`` (the hash field)."""
    kind = store_type.value if isinstance(store_type, StoreType) else str(store_type)
    return f"{kind}|{host.strip().lower()}|{store_path.strip().lower()}"


def store_id_of(store: StoreRef) -> str:
    """The hash field of a job's store."""
    return store_id(store.store_type, store.host_key, store.store_path)


def parse_document(raw: str | bytes) -> StoreInventory:
    """Validate one document read from Redis.

    Raises:
        InvalidStateError: too large, not JSON, or not a :class:`StoreInventory`.
    """
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InvalidStateError(f"document of {len(raw)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    try:
        return StoreInventory.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise InvalidStateError(f"{where}: {first['msg']}") from None


class InventoryReader:
    """Read the inventory state (``client``: a redis-py client, decoding or not).

    ``on_invalid`` is called once per document that fails validation (the worker counts them
    in ``wincert_inventory_state_invalid_total``); invalid documents are logged and skipped.
    """

    def __init__(
        self, client: redis.Redis, key: str = INVENTORY_KEY, on_invalid: Callable[[], None] | None = None
    ) -> None:
        self.client = client
        self.key = key
        self.on_invalid = on_invalid

    def get(self, store: StoreRef) -> StoreInventory | None:
        """The state of ``store`` (None: unknown, or its document is invalid)."""
        return self.get_by_id(store_id_of(store))

    def get_by_id(self, sid: str) -> StoreInventory | None:
        """The state of the store with hash field ``sid`` (None: unknown or invalid)."""
        raw = self.client.hget(self.key, sid)
        return None if raw is None else self._parse(sid, raw)

    def stores(self, count: int = 500) -> Iterator[StoreInventory]:
        """Every valid store document (HSCAN, ``count`` fields per round trip); invalid ones
        are skipped and logged."""
        for sid, raw in self.client.hscan_iter(self.key, count=count):
            parsed = self._parse(sid, raw)
            if parsed is not None:
                yield parsed

    def expiring(self, within: timedelta, now: datetime | None = None) -> list[ExpiringCertificate]:
        """Certificates whose ``not_after`` is before ``now + within`` (expired ones included),
        soonest first; one row per (store, alias)."""
        limit = ((now or datetime.now(UTC)) + within).timestamp()
        rows = [
            ExpiringCertificate(
                store_type=s.store_type.value,
                host=s.host,
                store_path=s.store_path,
                alias=c.alias,
                thumbprint=c.thumbprint,
                subject_cn=c.subject_cn,
                not_after=c.not_after_datetime,
            )
            for s in self.stores()
            for c in s.certificates
            if c.not_after < limit
        ]
        rows.sort(key=lambda r: (r.not_after, r.host, r.store_path, r.alias))
        return rows

    def _parse(self, sid: Any, raw: Any) -> StoreInventory | None:
        name = sid.decode("utf-8", "replace") if isinstance(sid, bytes) else str(sid)
        try:
            return parse_document(raw)
        except InvalidStateError as exc:
            log.warning("ignoring invalid inventory state for %r: %s", name[:300], exc)
            if self.on_invalid is not None:
                self.on_invalid()
            return None


def parse_within(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or plain seconds as a timedelta.

    Raises:
        ValueError: naming the accepted forms.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30d, 12h, 90m, 2w or seconds")
    number = float(match.group(1))
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    return timedelta(seconds=number * unit)
