"""Incremental inventory: what the worker already knows of a store, and what changed.

A WinCert inventory job with ``include_der`` false passes ``-KnownThumbprint`` (a PSRP
``string[]`` parameter, never script text; the worker sends one element, the sorted upper-case
hex thumbprints separated by commas, which the function splits) to ``Get-WinCertInventory``:
the host writes full records only for the other certificates, and ONE last record
``{"KnownCertificates": [[Index, HasPrivateKey, FriendlyName], ...]}`` for the known ones
(Index: position in the thumbprint list; ~12 bytes per certificate).
The worker fills a known certificate's parsed fields from
the inventory state's :class:`~producer.inventory_model.CertificateDetails` (no DER is ever
kept there) and takes the mutable properties (private key, friendly name) from the host.

A state document is used only when it is for this very store (store type, host, store path),
has had a successful inventory, and holds details for the certificate; otherwise the worker
asks the host for the certificate in full (absent or invalid state: a full inventory).
:func:`changes` compares any inventory with the previous one (every store type).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from producer.inventory_model import CertificateDetails, CertificateEntry, StoreInventory
from producer.messages import CertificateItem, InventoryChanges, StoreRef
from worker.shared_fields import share_fields_set

__all__ = [
    "KNOWN_CERTIFICATES",
    "KnownRecord",
    "baseline",
    "changes",
    "item_from_known",
    "known_entries",
    "made_from",
    "parse_known_certificates",
    "remember_batch",
    "remember_item",
    "reused_batch",
]

_SENT = "KnownThumbprint"
_SKIPPED = re.compile(r"^Skipped certificate ([0-9A-Fa-f]{40}):")


def baseline(store: StoreRef, doc: StoreInventory | None) -> StoreInventory | None:
    """``doc`` if it describes ``store`` (store type, host key, store path case-insensitively)
    and has had a successful inventory; else None (another store's or a never-inventoried
    document is no baseline)."""
    if doc is None or doc.last_inventory is None:
        return None
    if doc.store_type is not store.store_type or doc.host != store.host_key:
        return None
    if doc.store_path.lower() != store.store_path.lower():
        return None
    return doc


def known_entries(store: StoreRef, doc: StoreInventory | None) -> dict[str, CertificateEntry]:
    """Thumbprint → entry of the certificates the host need not send in full (entries with
    :attr:`CertificateEntry.details`); empty when ``doc`` is no baseline for ``store``."""
    base = baseline(store, doc)
    if base is None:
        return {}
    return {e.thumbprint: e for e in base.certificates if e.details is not None}


class KnownRecord:
    """The host's short record of a known certificate (thumbprint upper-case hex)."""

    __slots__ = ("friendly_name", "has_private_key", "thumbprint")

    def __init__(self, thumbprint: str, has_private_key: bool, friendly_name: str) -> None:
        self.thumbprint = thumbprint
        self.has_private_key = has_private_key
        self.friendly_name = friendly_name


KNOWN_CERTIFICATES = "KnownCertificates"
"""The key of the host's one record for the known certificates."""


def parse_known_certificates(record: dict[str, Any], sent: list[str]) -> tuple[list[KnownRecord], list[str]]:
    """Validate the host's ``{"KnownCertificates": [[Index, HasPrivateKey, FriendlyName], ...]}``
    (already JSON-decoded; untrusted). ``Index`` is the 0-based position in ``sent`` (the
    thumbprint list sent as ``-KnownThumbprint``, upper-case hex) of the certificate's thumbprint.

    Returns the valid records and, for each bad entry, a warning: ``Skipped certificate
    <thumbprint>: <reason>`` when the entry's index names a sent thumbprint (so the certificate
    is not counted as removed), else ``Skipped known-certificate entry <n>: <reason>``. A
    thumbprint reported twice keeps its first entry.

    Raises:
        ValueError: ``KnownCertificates`` is not a list (the message names it).
    """
    entries = record.get(KNOWN_CERTIFICATES)
    if not isinstance(entries, list):
        raise ValueError(f"{KNOWN_CERTIFICATES} is not a list")
    out: list[KnownRecord] = []
    warnings: list[str] = []
    seen: set[int] = set()
    for n, entry in enumerate(entries):
        index = entry[0] if isinstance(entry, list) and entry else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(sent):
            warnings.append(f"Skipped known-certificate entry {n}: Index is not a position in {_SENT}")
            continue
        thumbprint = sent[index]
        if index in seen:
            continue
        problem = None
        if len(entry) != 3:
            problem = "an entry must be [Index, HasPrivateKey, FriendlyName]"
        elif not isinstance(entry[1], bool):
            problem = "HasPrivateKey is not a boolean"
        elif entry[2] is not None and not isinstance(entry[2], str):
            problem = "FriendlyName is not a string"
        if problem:
            warnings.append(f"Skipped certificate {thumbprint}: {problem}")
            continue
        seen.add(index)
        out.append(KnownRecord(thumbprint, entry[1], entry[2] or ""))
    return out, warnings


ITEMS_CACHE_MAX = 20_000
"""Most known-certificate items :func:`item_from_known` keeps per process (~1.2 KB each with
their state details: ~25 MB at most; the oldest go first)."""

_ITEMS: dict[tuple[str, float, bool, str], tuple[CertificateDetails, CertificateItem]] = {}
"""(thumbprint, not_after, has_private_key, friendly_name) → (the state details the item was
made of, the item). Items are immutable; one is reused only when every input it was made of is
equal (the details by identity — the same validated state document — or by value), so a hit is
exactly what building it again would give. Building 5,000 items (pydantic validation) cost
~60 ms of worker CPU per unchanged re-inventory; reusing them ~3 ms."""


def item_from_known(entry: CertificateEntry, record: KnownRecord) -> CertificateItem:
    """The inventory item of a known certificate: parsed fields from the state, the private-key
    flag and friendly name from the host, ``der_b64`` empty. Reuses the item of an earlier
    inventory made of equal inputs (:data:`_ITEMS`).

    Raises:
        ValueError: the entry has no details (callers only pass :func:`known_entries`).
    """
    details = entry.details
    if details is None:
        raise ValueError(f"no details recorded for {entry.thumbprint}")
    key = (entry.thumbprint, entry.not_after, record.has_private_key, record.friendly_name)
    hit = _ITEMS.get(key)
    if hit is not None and (hit[0] is details or hit[0] == details):
        return hit[1]
    item = _build_item(entry, details, record)
    _keep_item(key, details, item)
    return item


def made_from(item: CertificateItem, entry: CertificateEntry) -> bool:
    """True when ``item`` is the very object :func:`item_from_known` returns for ``entry``
    (same thumbprint, not_after and details object; the host's flag and name as in ``item``),
    i.e. ``entry`` describes ``item`` exactly. False says nothing (compare the fields)."""
    hit = _ITEMS.get((entry.thumbprint, entry.not_after, item.has_private_key, item.friendly_name))
    return hit is not None and hit[1] is item and hit[0] is entry.details


def remember_item(entry: CertificateEntry, item: CertificateItem) -> None:
    """Keep ``item`` — reported in full, without DER, by an inventory — as the item
    :func:`item_from_known` would build for ``entry``, the state entry recorded from it (so the
    next, incremental, inventory of the store in this process reuses it). Ignored unless it is
    exactly that: no DER, no parameters, alias = thumbprint, whole-second times (they round-trip
    through the state's Unix seconds exactly), and ``entry``'s details."""
    details = entry.details
    if (
        details is None
        or item.der_b64
        or item.parameters
        or item.alias != entry.thumbprint
        or item.thumbprint != entry.thumbprint
        or item.not_before.microsecond
        or item.not_after.microsecond
        or item.not_after.timestamp() != entry.not_after
        or item.not_before.timestamp() != details.not_before
    ):
        return
    key = (entry.thumbprint, entry.not_after, item.has_private_key, item.friendly_name)
    _keep_item(key, details, item)


_ITEMS_LOCK = threading.Lock()
"""Serialises :data:`_ITEMS`' writes and its bound (-P threads: two threads evicting the same
oldest item failed a job with KeyError; reads stay lock-free, a ``dict.get`` is atomic)."""


def _keep_item(key: tuple[str, float, bool, str], details: CertificateDetails, item: CertificateItem) -> None:
    with _ITEMS_LOCK:
        _ITEMS.pop(key, None)
        _ITEMS[key] = (details, item)
        while len(_ITEMS) > ITEMS_CACHE_MAX:
            del _ITEMS[next(iter(_ITEMS))]


BATCHES_MAX = 4
"""Most host ``KnownCertificates`` records :func:`reused_batch` keeps per process (one per store
inventoried lately; a 5,000-certificate record is ~100 KB of text)."""

_BATCHES: dict[str, tuple[str, list[CertificateEntry], list[CertificateItem], list[str]]] = {}
"""``-KnownThumbprint`` as sent → (the host's record text, the state entries of the sent
thumbprints in order, the items and warnings made of them). The items of a known-certificates
record are a function of exactly these inputs (entries are immutable); an unchanged store sends
the same record again, and reusing its items skips parsing and checking 5,000 entries (~20 ms
of worker CPU)."""


def reused_batch(
    sent: str, text: str, entries: list[CertificateEntry]
) -> tuple[list[CertificateItem], list[str]] | None:
    """The items and warnings (new lists) made earlier of the very same inputs — ``sent`` (the
    ``-KnownThumbprint`` string), the host's record ``text`` (equal) and ``entries`` (the state
    entries of the sent thumbprints, in order; the same objects) — else None."""
    hit = _BATCHES.get(sent)
    if hit is None or hit[0] != text or len(hit[1]) != len(entries):
        return None
    if not all(a is b for a, b in zip(hit[1], entries, strict=True)):
        return None
    return list(hit[2]), list(hit[3])


def remember_batch(
    sent: str, text: str, entries: list[CertificateEntry], items: list[CertificateItem], warnings: list[str]
) -> None:
    """Keep what a known-certificates record gave (:func:`reused_batch` returns it for the same
    inputs); at most :data:`BATCHES_MAX` records, the oldest go first."""
    _BATCHES.pop(sent, None)
    _BATCHES[sent] = (text, list(entries), list(items), list(warnings))
    for oldest in list(_BATCHES)[:-BATCHES_MAX]:  # list(): one atomic copy (threads pool)
        _BATCHES.pop(oldest, None)


def _build_item(entry: CertificateEntry, details: CertificateDetails, record: KnownRecord) -> CertificateItem:
    item = CertificateItem(
        alias=entry.thumbprint,
        thumbprint=entry.thumbprint,
        subject=details.subject,
        issuer=details.issuer,
        serial_number=details.serial_number,
        not_before=datetime.fromtimestamp(details.not_before, UTC),
        not_after=datetime.fromtimestamp(entry.not_after, UTC),
        has_private_key=record.has_private_key,
        friendly_name=record.friendly_name,
        key_algorithm=details.key_algorithm,
        key_size=details.key_size,
        sans=list(details.sans),
        der_b64="",
        parameters={},
    )
    share_fields_set(item)  # kept in _ITEMS (worker/shared_fields.py)
    return item


def changes(
    previous: StoreInventory | None, items: Iterable[CertificateItem], warnings: Iterable[str] = ()
) -> InventoryChanges | None:
    """Added / removed / unchanged thumbprints of an inventory against ``previous`` (a
    :func:`baseline`; None → None). Certificates the inventory skipped ("Skipped certificate
    <thumbprint>: ..." warnings) are not counted as removed."""
    if previous is None:
        return None
    before = previous.thumbprints()
    now = {item.thumbprint.upper() for item in items}
    skipped = {m.group(1).upper() for m in (_SKIPPED.match(w) for w in warnings) if m}
    added = sorted(now - before)
    removed = sorted(before - now - skipped)
    return InventoryChanges(
        added=len(added),
        removed=len(removed),
        unchanged=len(now & before),
        added_thumbprints=added,
        removed_thumbprints=removed,
    )
