"""WinCert store jobs: any ``Cert:\\LocalMachine\\<store path>`` certificate store.

Inventory calls ``Get-WinCertInventory -StorePath <path>`` (``worker/powershell/Inventory.ps1``),
which writes one compact JSON record per certificate, in strings of newline-separated records
(~64 KiB each). Each record is validated here before it
becomes a :class:`~producer.messages.CertificateItem`: the thumbprint must equal the SHA-1 of
``RawData``; a record that fails any check is skipped with a warning, as are certificates the
host itself skipped ("Skipped certificate ..." warnings). Any skipped certificate makes the job
``warning`` / ``partial``; other warnings are reported without changing the status.

Add imports through :func:`worker.jobs.certificates.import_certificate` (idempotent:
``already_present`` unless ``overwrite``; a certificate that was present without its key gets
its key, reported as such rather than as an overwrite). Remove deletes by the normalised
thumbprint (``already_absent`` when it is not there).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from producer.codes import ResultCode
from producer.entry_parameters import WinCertParameters
from producer.inventory_model import CertificateEntry, StoreInventory
from producer.messages import (
    THUMBPRINT_RE,
    AddJob,
    CertificateItem,
    InventoryJob,
    RemoveJob,
    Status,
    SubjectAltName,
)
from worker.jobs import certificates, incremental
from worker.jobs.certificates import PreparedCertificate
from worker.jobs.outcome import Outcome
from worker.remote.session import RemoteSession
from worker.shared_fields import share_fields_set

INVENTORY_FUNCTION = "Get-WinCertInventory"

_SAN_TYPES = {"dns", "ip", "email", "upn", "uri", "dn", "other"}
_HEX = re.compile(r"^[0-9A-F]+$")
_FRACTION = re.compile(r"(\.\d{6})\d+")


class RecordError(ValueError):
    """One inventory record is unusable; the message says why (no certificate content)."""


def parse_time(value: Any, field: str) -> datetime:
    """Parse a UTC ISO 8601 time as psrpcore (``...52Z``) or .NET (``...52.1234567Z``) writes it."""
    if not isinstance(value, str) or not value:
        raise RecordError(f"{field} is missing")
    text = value.strip()
    if "." in text:  # only a fraction can be cut (~2 µs a call saved: two per record)
        text = _FRACTION.sub(r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(f"{field} {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_record(text: Any, *, keep_der: bool = True) -> CertificateItem:
    """Turn one JSON record from ``Get-WinCertInventory`` into a :class:`CertificateItem`
    (``keep_der`` false: ``der_b64`` empty; the thumbprint is checked against RawData anyway).

    Raises:
        RecordError: the record is not JSON, misses fields, or its thumbprint does not match.
    """
    if not isinstance(text, str):
        raise RecordError(f"expected a JSON string, got a {type(text).__name__}")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    raw = record.get("RawData")
    if not isinstance(raw, str) or not raw:
        raise RecordError("RawData is missing")
    try:
        der = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise RecordError("RawData is not base64") from None
    thumbprint = str(record.get("Thumbprint", "")).upper()
    if not THUMBPRINT_RE.fullmatch(thumbprint):
        raise RecordError(f"Thumbprint {record.get('Thumbprint')!r} is not 40 hex characters")
    actual = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    if actual != thumbprint:
        raise RecordError(f"Thumbprint does not match the SHA-1 of RawData ({actual})")
    serial = str(record.get("SerialNumber", "")).upper()
    if not _HEX.fullmatch(serial):
        raise RecordError(f"SerialNumber {record.get('SerialNumber')!r} is not hex")
    sans = []
    for entry in record.get("Sans") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Value"), str):
            raise RecordError("Sans entries must be {Type, Value} objects")
        kind = str(entry.get("Type", "other")).lower()
        sans.append(SubjectAltName(type=kind if kind in _SAN_TYPES else "other", value=entry["Value"]))
    key_size = record.get("KeySize")
    if key_size is not None and (isinstance(key_size, bool) or not isinstance(key_size, int)):
        raise RecordError(f"KeySize {key_size!r} is not an integer")
    has_key = record.get("HasPrivateKey")
    if not isinstance(has_key, bool):
        raise RecordError("HasPrivateKey is not a boolean")
    try:
        item = CertificateItem(
            alias=thumbprint,
            thumbprint=thumbprint,
            subject=str(record.get("Subject") or ""),
            issuer=str(record.get("Issuer") or ""),
            serial_number=serial,
            not_before=parse_time(record.get("NotBefore"), "NotBefore"),
            not_after=parse_time(record.get("NotAfter"), "NotAfter"),
            has_private_key=has_key,
            friendly_name=str(record.get("FriendlyName") or ""),
            key_algorithm=str(record.get("KeyAlgorithm") or ""),
            key_size=key_size,
            sans=sans,
            der_b64=base64.b64encode(der).decode("ascii") if keep_der else "",
            parameters={},
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise RecordError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    share_fields_set(item)  # items outlive the job (worker/shared_fields.py)
    for san in item.sans:
        share_fields_set(san)
    return item


def _known_items(
    text: Any, known: dict[str, CertificateEntry], sent: list[str]
) -> tuple[list[CertificateItem], list[str]] | None:
    """The items of the host's one ``KnownCertificates`` record, and warnings for bad entries
    (None: not that record, parse it in full).

    Raises:
        RecordError: a ``KnownCertificates`` record that is not JSON or not a list.
    """
    if not isinstance(text, str) or '"KnownCertificates"' not in text[:40]:
        return None
    joined = ",".join(sent)
    entries = [known[t] for t in sent]
    reused = incremental.reused_batch(joined, text, entries)
    if reused is not None:  # the same record of the same known certificates: the same items
        return reused
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(record, dict) or incremental.KNOWN_CERTIFICATES not in record:
        return None
    try:
        shorts, warnings = incremental.parse_known_certificates(record, sent)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    items: list[CertificateItem] = []
    for short in shorts:
        try:
            items.append(incremental.item_from_known(known[short.thumbprint], short))
        except (ValueError, ValidationError) as exc:
            warnings.append(
                f"Skipped certificate {short.thumbprint}: the inventory state's fields are unusable ({exc})"
            )
    incremental.remember_batch(joined, text, entries, items, warnings)
    return items, warnings


def _record_name(text: Any) -> str:
    if isinstance(text, str):
        match = re.search(r'"Thumbprint"\s*:\s*"([^"]{1,64})"', text)
        if match:
            return match.group(1)
    return "(unknown)"


def inventory(job: InventoryJob, session: RemoteSession, previous: StoreInventory | None = None) -> Outcome:
    """List every certificate in ``Cert:\\LocalMachine\\<store path>``; alias = thumbprint.

    ``job.include_der`` false: incremental (:mod:`worker.jobs.incremental`) against
    ``previous``, the store's inventory state; every item's ``der_b64`` is empty.
    """
    if job.include_der:
        items, warnings = inventory_items(session, job.store.store_path)
    else:
        known = incremental.known_entries(job.store, previous)
        items, warnings = inventory_items(session, job.store.store_path, known, keep_der=False)
    return inventory_outcome(items, warnings)


def inventory_outcome(items: list[CertificateItem], warnings: list[str]) -> Outcome:
    """Success with the peer's message, or warning/``partial`` when anything was skipped."""
    message = f"Inventory completed returning {len(items)} items."
    skipped = sum(1 for w in warnings if w.startswith("Skipped "))
    if skipped:
        return Outcome(Status.WARNING, ResultCode.PARTIAL, f"{message} {skipped} skipped.", warnings, items)
    return Outcome(Status.SUCCESS, ResultCode.OK, message, warnings, items)


def inventory_items(
    session: RemoteSession,
    store_path: str,
    known: dict[str, CertificateEntry] | None = None,
    *,
    keep_der: bool = True,
) -> tuple[list[CertificateItem], list[str]]:
    """``Get-WinCertInventory`` of one store: validated items (alias = thumbprint) and warnings.

    The host writes its full records in batches (strings of newline-separated records); each
    record is checked on its own (:func:`parse_record`; ``keep_der`` false: ``der_b64`` empty).

    ``known`` (thumbprint → state entry with details): sent sorted as ``-KnownThumbprint``, ONE
    comma-separated string (one PSRP string: serialising 5,000 array elements cost ~70 ms of
    worker CPU); the host's one ``KnownCertificates`` record (indexes into that list) is
    completed from the entries (``der_b64`` empty); those items follow the ones the host sent
    in full.
    """
    parameters: dict[str, Any] = {"StorePath": store_path}
    sent = sorted(known) if known else []
    if sent:
        parameters["KnownThumbprint"] = ",".join(sent)
    invocation = session.invoke(INVENTORY_FUNCTION, parameters)
    warnings = list(invocation.warnings)
    items: list[CertificateItem] = []
    seen: set[str] = set()
    for output in invocation.output:
        try:
            batch = _known_items(output, known, sent) if known else None
        except RecordError as exc:
            warnings.append(f"Skipped certificate {_record_name(output)}: {exc}")
            continue
        if batch is not None:
            parsed, batch_warnings = batch
            warnings.extend(batch_warnings)
        else:
            parsed = []
            for text in output.split("\n") if isinstance(output, str) else [output]:
                try:
                    parsed.append(parse_record(text, keep_der=keep_der))
                except RecordError as exc:
                    warnings.append(f"Skipped certificate {_record_name(text)}: {exc}")
        for item in parsed:
            if item.thumbprint not in seen:
                seen.add(item.thumbprint)
                items.append(item)
    return items, warnings


_ADD_MESSAGES = {
    "added": "Added certificate {t} to {s}.",
    "replaced": "Replaced certificate {t} in {s} (overwrite).",
    "key_added": "Added the private key of certificate {t} in {s}; the certificate was there without it.",
    "already_present": "Certificate {t} is already in {s}; nothing changed (set overwrite to replace it).",
}


def add(job: AddJob, session: RemoteSession, prepared: PreparedCertificate) -> Outcome:
    """Import the certificate into ``LocalMachine\\<store path>``; idempotent (``already_present``).
    With ``job.check``: only report what the import would do (:func:`check_add`)."""
    info = certificates.host_info(session)
    entry = job.entry
    provider = entry.provider_name if isinstance(entry, WinCertParameters) else None
    if job.check:
        return check_add(job, session, prepared, info, provider)
    imported = certificates.import_certificate(session, job, prepared, info, provider)
    code = ResultCode.ALREADY_PRESENT if imported.outcome == "already_present" else ResultCode.OK
    outcome = imported.outcome
    if outcome == "replaced" and not job.overwrite:
        # Without -Overwrite the host replaces only a certificate that was there without its key.
        outcome = "key_added"
    template = _ADD_MESSAGES.get(outcome, "Imported certificate {t} into {s} (host outcome: {o}).")
    message = template.format(t=imported.thumbprint, s=job.store.store_path, o=outcome)
    return Outcome(Status.SUCCESS, code, message, imported.warnings, thumbprint=imported.thumbprint)


def remove(job: RemoveJob, session: RemoteSession) -> Outcome:
    """Delete the certificate the alias (thumbprint) names; idempotent (``already_absent``).
    With ``job.check``: only report whether it would be deleted (:func:`check_remove`)."""
    if job.check:
        return check_remove(job, session)
    removed = certificates.remove_certificate(session, job.store.store_path, job.thumbprint, if_unused=False)
    if removed.outcome == "already_absent":
        return Outcome(
            Status.SUCCESS,
            ResultCode.ALREADY_ABSENT,
            f"Certificate {job.thumbprint} is not in {job.store.store_path}; nothing to remove.",
            removed.warnings,
            thumbprint=job.thumbprint,
        )
    return Outcome(
        Status.SUCCESS,
        ResultCode.OK,
        f"Removed certificate {job.thumbprint} from {job.store.store_path}.",
        removed.warnings,
        thumbprint=job.thumbprint,
    )


# --- check mode: read the store, report what the job would do, change nothing -----------------


def _present(session: RemoteSession, store_path: str, thumbprint: str) -> CertificateItem | None:
    items, _warnings = inventory_items(session, store_path)  # Get-WinCertInventory: reads only
    return next((item for item in items if item.thumbprint == thumbprint), None)


def check_add(
    job: AddJob,
    session: RemoteSession,
    prepared: PreparedCertificate,
    info: certificates.HostInfo,
    provider: str | None,
) -> Outcome:
    """What ``add`` would do, decided from the store's inventory with the same host checks as an
    import (build, key storage provider); nothing is imported. ``ok``: it would change the store;
    ``already_present``: nothing would change."""
    parsed = certificates.for_host(prepared, job, info)
    certificates.check_provider(info, provider, parsed.key_algorithm if parsed.has_private_key else None)
    thumbprint, store = parsed.thumbprint, job.store.store_path
    found = _present(session, store, thumbprint)
    chain = (
        f" and {len(parsed.chain_der)} chain certificate(s) to CA/Root"
        if job.include_chain and parsed.chain_der
        else ""
    )
    if found is None:
        return Outcome(
            Status.SUCCESS,
            ResultCode.OK,
            f"Check: would import certificate {thumbprint} into {store}{chain}; nothing changed.",
            thumbprint=thumbprint,
        )
    if parsed.has_private_key and not found.has_private_key:
        message = (
            f"Check: would add the private key of certificate {thumbprint} in {store}{chain};"
            " nothing changed."
        )
        return Outcome(Status.SUCCESS, ResultCode.OK, message, thumbprint=thumbprint)
    if job.overwrite:
        message = (
            f"Check: would replace certificate {thumbprint} in {store} (overwrite){chain}; nothing changed."
        )
        return Outcome(Status.SUCCESS, ResultCode.OK, message, thumbprint=thumbprint)
    message = f"Check: certificate {thumbprint} is already in {store}; the import would change nothing."
    return Outcome(Status.SUCCESS, ResultCode.ALREADY_PRESENT, message, thumbprint=thumbprint)


def check_remove(job: RemoveJob, session: RemoteSession) -> Outcome:
    """Whether ``remove`` would delete the certificate (``ok``) or find it absent
    (``already_absent``); nothing is deleted."""
    store = job.store.store_path
    found = _present(session, store, job.thumbprint)
    if found is None:
        message = f"Check: certificate {job.thumbprint} is not in {store}; the removal would change nothing."
        return Outcome(Status.SUCCESS, ResultCode.ALREADY_ABSENT, message, thumbprint=job.thumbprint)
    key = " and its private key" if found.has_private_key else ""
    message = (
        f"Check: would delete certificate {job.thumbprint} ({found.subject}){key} from {store};"
        " nothing changed."
    )
    return Outcome(Status.SUCCESS, ResultCode.OK, message, thumbprint=job.thumbprint)
