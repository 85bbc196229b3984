"""Inventory state entries of certificates: what the state keeps of one (no DER).

Split from :mod:`worker.inventory_state` (which re-exports the public names): the pure
functions that turn an inventory item (:class:`producer.messages.CertificateItem`) or a job's
certificate (DER, PEM or base64 text) into a :class:`producer.inventory_model.CertificateEntry`
or :class:`CertificateSummary`, and that tell whether an inventory found an entry unchanged.
Shapes: ``thumbprint`` 40 upper-case hex; ``not_after``/``seen`` Unix seconds (UTC) in entries,
an aware :class:`~datetime.datetime` in :class:`CertificateSummary`; ``subject_cn`` at most
:data:`producer.inventory_model.CN_MAX` characters ('' when none). No Redis here.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ValidationError

from producer.inventory_model import CN_MAX, CertificateDetails, CertificateEntry, is_thumbprint
from producer.messages import CertificateItem
from worker.jobs import incremental
from worker.shared_fields import all_fields_set, share_fields_set

__all__ = [
    "CertificateSummary",
    "common_name_of_subject",
    "entry_from_item",
]


# --- certificate summaries (no DER kept) ----------------------------------------------------


_SUBJECT_CN = re.compile(r'(?:^|[,;]\s*)CN=("(?:[^"]|"")*"|(?:\\.|[^,;])*)', re.IGNORECASE)
_ESCAPED = re.compile(r"\\(.)")


def common_name_of_subject(subject: str) -> str:
    """The first CN of a subject string as Windows or RFC 4514 writes it ('' when none)."""
    if subject[:1] in ("C", "c") and subject[1:2] in ("N", "n") and subject[2:3] == "=":
        # The usual subject (CN first, unquoted, unescaped), ~0.5 µs instead of ~1.3: what
        # _common_name_by_pattern finds there (tests/unit/test_inventory_entries_contract.py).
        comma, semicolon = subject.find(",", 3), subject.find(";", 3)
        end = min(comma, semicolon) if comma >= 0 and semicolon >= 0 else max(comma, semicolon)
        value = subject[3:] if end < 0 else subject[3:end]
        if '"' not in value and "\\" not in value:
            return value.strip()[:CN_MAX]
    return _common_name_by_pattern(subject)


def _common_name_by_pattern(subject: str) -> str:
    match = _SUBJECT_CN.search(subject)
    if not match:
        return ""
    value = match.group(1).strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1].replace('""', '"')
    elif "\\" in value:  # unescape (re.sub with a template: ~5 µs, 5,000 times a full inventory)
        value = _ESCAPED.sub(r"\1", value)
    return value[:CN_MAX]


def _cn_of_certificate(cert: x509.Certificate) -> str:
    try:
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    if not names:
        return ""
    value = names[0].value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:CN_MAX]


@dataclass(frozen=True)
class CertificateSummary:
    """What the state keeps of a certificate installed by a job (computed from its DER)."""

    thumbprint: str
    subject_cn: str
    not_after: datetime

    @classmethod
    def from_der(cls, der: bytes) -> CertificateSummary:
        """Summarise a DER certificate.

        Raises:
            ValueError: ``der`` is not an X.509 certificate.
        """
        cert = x509.load_der_x509_certificate(der)
        thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
        return cls(thumbprint, _cn_of_certificate(cert), cert.not_valid_after_utc)

    @classmethod
    def from_text(cls, text: str) -> CertificateSummary:
        """Summarise the first certificate of PEM text or base64 DER (a completion job's input).

        Raises:
            ValueError: not a certificate.
        """
        if "-----BEGIN" in text:
            cert = x509.load_pem_x509_certificates(text.encode("ascii", "replace"))[0]
            return cls.from_der(cert.public_bytes(Encoding.DER))
        return cls.from_der(base64.b64decode("".join(text.split()), validate=True))


def _binding_of(item: CertificateItem) -> str | None:
    """IISU ``site:ip:port:host`` (the alias after the thumbprint), WinSQL the instance names."""
    if ":" in item.alias:  # IISU: THUMB:site:ip:port:host
        return item.alias.split(":", 1)[1]
    if item.parameters.get("InstanceName"):
        return str(item.parameters["InstanceName"])
    return None


def entry_from_item(item: CertificateItem, seen: float) -> CertificateEntry:
    """The state entry of one inventory item (CN from the DER, else from the subject string).

    Equal to validating the same fields with the models (:func:`_validated_entry`), which it
    does only when :func:`_checked_entry` finds a field outside the models' constraints (then
    raising what validation raises): ~3 µs per certificate instead of ~10 µs."""
    cn = _cn_of_item(item)
    binding = _binding_of(item)
    entry = _checked_entry(item, cn, binding, seen)
    if entry is None:
        entry = _validated_entry(item, cn, binding, seen)
    return entry


def _cn_of_item(item: CertificateItem) -> str:
    """The CN of the item's DER, else of its subject string ('' when none)."""
    cn = ""
    if item.der_b64:  # an inventory without DER: the CN from the subject string below
        try:
            cn = _cn_of_certificate(x509.load_der_x509_certificate(base64.b64decode(item.der_b64)))
        except ValueError:
            cn = ""
    return cn or common_name_of_subject(item.subject)


def _validated_details(item: CertificateItem) -> CertificateDetails | None:
    """The item's :class:`CertificateDetails`, validated (None: not valid details)."""
    try:
        details = CertificateDetails(
            subject=item.subject,
            issuer=item.issuer,
            serial_number=item.serial_number,
            not_before=item.not_before.timestamp(),
            key_algorithm=item.key_algorithm,
            key_size=item.key_size,
            sans=item.sans,
        )
    except (ValidationError, ValueError, OverflowError):
        return None  # not kept: incremental inventory asks the host for this one in full
    share_fields_set(details)
    return details


def _validated_entry(item: CertificateItem, cn: str, binding: str | None, seen: float) -> CertificateEntry:
    """What :func:`entry_from_item` returns, every field validated by the models.

    Raises:
        pydantic.ValidationError: not a valid entry (e.g. an alias of more than 1,024 characters).
    """
    entry = CertificateEntry(
        alias=item.alias,
        thumbprint=item.thumbprint.upper(),
        subject_cn=cn,
        not_after=item.not_after.timestamp(),
        binding=binding,
        seen=seen,
        details=_validated_details(item),
    )
    share_fields_set(entry)
    return entry


# --- entries without a second validation ------------------------------------------------------
#
# A CertificateItem is a validated model: its strings are str, key_size an int or None, its SANs
# validated SubjectAltName models, its times datetimes. What CertificateEntry and
# CertificateDetails add to that are the constraints below, checked here by hand; a field outside
# them sends the item through _validated_entry. tests/unit/test_inventory_entries_contract.py
# checks that the entries made here equal the validated ones and that the two models' JSON
# schemas and validators are still those these checks were written for.

_TIME_MAX = 253402300799.0
"""``le`` of :attr:`CertificateEntry.not_after` and :attr:`CertificateDetails.not_before`
(9999-12-31T23:59:59Z, Unix seconds); both are ``ge=0``."""

_SERIAL = re.compile(r"[0-9A-F]{1,128}")
""":attr:`CertificateDetails.serial_number`'s pattern ``^[0-9A-F]{1,128}$`` as pydantic matches
it (Rust regex: ``$`` is the end of the text, so a trailing newline fails): ``fullmatch``."""

_M = TypeVar("_M", bound=BaseModel)
_new_model = object.__new__
_set_attribute = object.__setattr__
_ENTRY_FIELDS = all_fields_set(CertificateEntry)
_DETAILS_FIELDS = all_fields_set(CertificateDetails)


def _built(cls: type[_M], fields: dict[str, object], fields_set: set[str]) -> _M:
    """An instance of ``cls`` holding ``fields`` (every field, in field order) as a validation
    would leave it (``extra="ignore"``, no private attributes), with no validation."""
    model = _new_model(cls)
    _set_attribute(model, "__dict__", fields)
    _set_attribute(model, "__pydantic_fields_set__", fields_set)
    _set_attribute(model, "__pydantic_extra__", None)
    _set_attribute(model, "__pydantic_private__", None)
    return model


def _checked_details(item: CertificateItem) -> CertificateDetails | None:
    """:func:`_validated_details` of an item whose fields all hold CertificateDetails'
    constraints, built without validation; None when one does not (or its time overflows)."""
    subject, issuer, serial, algorithm = item.subject, item.issuer, item.serial_number, item.key_algorithm
    key_size, sans = item.key_size, item.sans
    try:
        not_before = item.not_before.timestamp()
    except (ValueError, OverflowError):
        return None
    if (
        len(subject) > 4096
        or len(issuer) > 4096
        or _SERIAL.fullmatch(serial) is None
        or not 0.0 <= not_before <= _TIME_MAX
        or len(algorithm) > 256
        or (key_size is not None and not 0 <= key_size <= 1_000_000)
        or len(sans) > 1000
    ):
        return None
    fields = {
        "subject": subject,
        "issuer": issuer,
        "serial_number": serial,
        "not_before": not_before,
        "key_algorithm": algorithm,
        "key_size": key_size,
        "sans": list(sans),  # validation copies the list too (the SANs themselves are kept)
    }
    return _built(CertificateDetails, fields, _DETAILS_FIELDS)


def _checked_entry(
    item: CertificateItem, cn: str, binding: str | None, seen: float
) -> CertificateEntry | None:
    """:func:`_validated_entry` of an item whose fields all hold CertificateEntry's constraints,
    built without validating again what the item's model validated; None when one does not."""
    alias, thumbprint = item.alias, item.thumbprint.upper()
    try:
        not_after = item.not_after.timestamp()
    except (ValueError, OverflowError):
        return None
    if (
        not 1 <= len(alias) <= 1024
        or not is_thumbprint(thumbprint)
        or len(cn) > CN_MAX
        or not 0.0 <= not_after <= _TIME_MAX
        or (binding is not None and len(binding) > 1024)
        or type(seen) is not float  # an int or a bool: validation converts it
        or not seen >= 0.0
        or type(cn) is not str
        or (binding is not None and type(binding) is not str)
    ):
        return None
    details = _checked_details(item)
    if details is None:
        details = _validated_details(item)
    fields = {
        "alias": alias,
        "thumbprint": thumbprint,
        "subject_cn": cn,
        "not_after": not_after,
        "binding": binding,
        "seen": seen,
        "details": details,
    }
    return _built(CertificateEntry, fields, _ENTRY_FIELDS)


def _unchanged_entry(entry: CertificateEntry | None, item: CertificateItem) -> CertificateEntry | None:
    """``entry`` if ``item`` (without DER) carries exactly the fields it records (thumbprint,
    not after and every :class:`CertificateDetails` field): what
    :func:`worker.jobs.incremental.item_from_known` made of it. Such an entry is kept as is
    (with a new ``seen``) instead of being rebuilt and re-validated (~13 µs per certificate)."""
    if entry is None or item.der_b64 or entry.details is None:
        return None
    if entry.binding is None and incremental.made_from(item, entry):  # the common case, ~0.4 µs
        return entry
    if entry.binding != _binding_of(item):
        return None
    d = entry.details
    if (
        entry.thumbprint != item.thumbprint.upper()
        or entry.not_after != item.not_after.timestamp()
        or d.subject != item.subject
        or d.issuer != item.issuer
        or d.serial_number != item.serial_number
        or d.not_before != item.not_before.timestamp()
        or d.key_algorithm != item.key_algorithm
        or d.key_size != item.key_size
        or d.sans != item.sans
    ):
        return None
    return entry


def _as_recorded(entries: Sequence[CertificateEntry], items: Sequence[CertificateItem]) -> bool:
    """True when ``items`` are, one for one and in order, what
    :func:`worker.jobs.incremental.item_from_known` made of ``entries`` (the very objects:
    :func:`~worker.jobs.incremental.made_from`): an incremental inventory that found the store
    exactly as recorded (~0.5 µs per certificate). False says nothing."""
    if len(entries) != len(items):
        return False
    made_from = incremental.made_from
    return all(
        e.binding is None and i.alias == e.alias and made_from(i, e)
        for e, i in zip(entries, items, strict=True)
    )


def _with_seen(entry: CertificateEntry, seen: float) -> CertificateEntry:
    """``entry.model_copy(update={"seen": seen})`` (same fields set, no validation: ``seen`` is
    an inventory's start time, a valid value) in ~1.6 µs instead of ~4 µs: what an unchanged
    5,000-certificate re-inventory does for every certificate. ``tests/integration/
    test_inventory_state.py`` checks it equals ``model_copy``."""
    copy = _new_model(CertificateEntry)
    fields = entry.__dict__.copy()
    fields["seen"] = seen
    _set_attribute(copy, "__dict__", fields)
    fields_set = entry.__pydantic_fields_set__  # never mutated (model_copy copies it): shared
    if "seen" not in fields_set:
        fields_set = fields_set | {"seen"}
    _set_attribute(copy, "__pydantic_fields_set__", fields_set)
    _set_attribute(copy, "__pydantic_extra__", None)
    _set_attribute(copy, "__pydantic_private__", None)
    return copy
