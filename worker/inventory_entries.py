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

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from producer.inventory_model import CN_MAX, CertificateDetails, CertificateEntry
from producer.messages import CertificateItem
from worker.jobs import incremental
from worker.shared_fields import share_fields_set

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
    """The state entry of one inventory item (CN from the DER, else from the subject string)."""
    cn = ""
    if item.der_b64:  # an inventory without DER: the CN from the subject string below
        try:
            cn = _cn_of_certificate(x509.load_der_x509_certificate(base64.b64decode(item.der_b64)))
        except ValueError:
            cn = ""
    if not cn:
        cn = common_name_of_subject(item.subject)
    binding = _binding_of(item)
    details: CertificateDetails | None
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
        details = None  # not kept: incremental inventory asks the host for this one in full
    entry = CertificateEntry(
        alias=item.alias,
        thumbprint=item.thumbprint.upper(),
        subject_cn=cn,
        not_after=item.not_after.timestamp(),
        binding=binding,
        seen=seen,
        details=details,
    )
    share_fields_set(entry)
    if details is not None:
        share_fields_set(details)
    return entry


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


_new_object = object.__new__
_set_attribute = object.__setattr__


def _with_seen(entry: CertificateEntry, seen: float) -> CertificateEntry:
    """``entry.model_copy(update={"seen": seen})`` (same fields set, no validation: ``seen`` is
    an inventory's start time, a valid value) in ~1.6 µs instead of ~4 µs: what an unchanged
    5,000-certificate re-inventory does for every certificate. ``tests/integration/
    test_inventory_state.py`` checks it equals ``model_copy``."""
    copy = _new_object(CertificateEntry)
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
