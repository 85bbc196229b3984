"""The latest inventory of every certificate store, kept in Redis (no DER, one entry per store).

Read by the expiry metrics (:mod:`worker.metrics_collectors`), ``wincert expiring`` and
incremental inventory; written by every inventory and by every change a job makes (add,
remove, reenrollment completion), through :func:`apply_job_result` called from
:mod:`worker.tasks`.

API (small on purpose; readers on the producer side use :class:`producer.inventory_model.InventoryReader`)
=====================================================================================================

* ``InventoryState(client).get(store) -> StoreInventory | None`` — the store's document:
  ``certificates`` (:class:`CertificateEntry`: ``alias``, ``thumbprint``, ``subject_cn``,
  ``not_after`` Unix seconds, ``binding``, ``seen``), ``thumbprints()``, ``last_inventory``
  (Unix seconds of the last successful inventory's start, None if never), ``last_failure``;
* ``stores()`` — every valid document (HSCAN); ``expiring(within, now)`` — soonest first;
* ``record_inventory(store, items, started_at)`` — a successful (full) inventory;
  ``record_failure(store, code, at)``; ``record_added(store, CertificateSummary, at, ...)``;
  ``record_removed(store, alias, at)``; ``forget(store)``;
* :func:`apply_job_result` — what :mod:`worker.tasks` calls after every finished job.

The entries themselves (:class:`CertificateSummary`, :func:`entry_from_item`,
:func:`common_name_of_subject`: certificate → entry, no Redis) live in
:mod:`worker.inventory_entries` and are re-exported here.

Redis data model
================

One hash, :data:`INVENTORY_KEY` (``wincert:inventory``): field = the store id
``<store type>|<host>|<store path>`` (host and store path lower-case: Windows store names are
case-insensitive; the host is :attr:`producer.messages.StoreRef.host_key`), value = one JSON
document, :class:`StoreInventory`::

    {"v": 1, "store_type": "WinCert", "host": "web01", "store_path": "My",
     "last_inventory": 1765100000.0,        # Unix seconds of the last successful inventory's
                                            # start (null: never inventoried successfully)
     "last_failure": null, "last_failure_code": null,
     "updated": 1765100000.0,               # last write of any kind
     "certificates": [{"alias": "3B8D...E91F", "thumbprint": "3B8D...E91F",
                       "subject_cn": "web01.contoso.com", "not_after": 1790000000.0,
                       "binding": null, "seen": 1765100000.0,
                       "details": {"subject": "CN=web01.contoso.com", "issuer": "CN=CA",
                                   "serial_number": "0A1B", "not_before": 1760000000.0,
                                   "key_algorithm": "RSA", "key_size": 2048,
                                   "sans": [{"type": "dns", "value": "web01.contoso.com"}]}}],
     "removed": {"<alias>": 1765100001.0}}  # tombstones newer than the last inventory

The worker writes ``certificates`` last (so an unchanged array is copied from the bytes it
wrote before, :func:`_document_json`); field order is not part of the format.

* ``details`` (optional, :class:`producer.inventory_model.CertificateDetails`): the parsed
  fields a full inventory saw (never the DER, never the mutable HasPrivateKey/FriendlyName);
  absent for entries a job recorded. Incremental inventory (:mod:`worker.jobs.incremental`)
  reports known certificates from them.
* ``alias`` is the inventory alias in Keyfactor's format for the store type (WinCert/WinSQL:
  the thumbprint; IISU: ``THUMB:site:ip:port:host``), unique within a store;
  ``thumbprint`` is 40 upper-case hex; ``not_after`` is Unix seconds (UTC);
  ``binding`` is what the certificate is bound to: IISU ``site:ip:port:host``, WinSQL the
  comma-separated instance names, WinCert null.
* Bounded: one field per store ever touched; a store's document holds only its certificates
  (no DER, ~200 bytes each) and tombstones younger than its last inventory.

Ordering: an inventory that started before a change finished must not undo that change. Each
certificate carries ``seen`` (when it was observed) and each removal a tombstone time; applying
an inventory started at ``T`` keeps entries seen after ``T`` and honours tombstones after ``T``.
An inventory that finds the store exactly as recorded (every entry, in order, is what it
reported; no tombstone after ``T``) leaves the entries as they are — their ``seen`` too — and
moves only ``last_inventory`` (no 2.3 MB rebuild for 5,000 unchanged certificates). The one
difference: an older inventory still running, that did not see such an entry (its certificate
left the store and came back in between), drops it until the next inventory, where a bumped
``seen`` would have kept it.
Every write is a compare-and-set of the store's own field (one Lua script: ``HGET``, ``HSET``;
:func:`worker.results.write_if_unchanged`, or with the job's result publish in the same script,
:meth:`worker.results.Publication.write_state`): the new document is written only if the field
still holds the document it was derived from (same SHA-1; first guess: the bytes this process
last read or wrote, usually the read before the job), else the script returns the current
document and the change is applied to that again. So writers of different stores never
conflict, and a write costs three Redis commands (six with ``WATCH``/``MULTI``, whose version
keys ``wincert:inventory:version:<store id>`` are no longer written;
:meth:`InventoryState.forget` still deletes a left-over one).

Everything read back from Redis is untrusted: a document that is not valid JSON, does not match
the model, or is larger than :data:`MAX_DOCUMENT_BYTES` is ignored (logged, counted in
``wincert_inventory_state_invalid_total``) and treated as absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from pydantic import TypeAdapter

from producer.inventory_model import (
    CN_MAX,
    INVENTORY_KEY,
    CertificateEntry,
    ExpiringCertificate,
    InvalidStateError,
    InventoryReader,
    StoreInventory,
    parse_document,
    parse_within,
    store_id,
    store_id_of,
)
from producer.messages import (
    AddJob,
    AnyJob,
    CertificateItem,
    InventoryJob,
    JobResult,
    ReenrollmentCompleteJob,
    RemoveJob,
    Status,
    StoreRef,
    StoreType,
)
from worker import metrics
from worker.inventory_entries import (
    CertificateSummary,
    _as_recorded,
    _unchanged_entry,
    _with_seen,
    common_name_of_subject,
    entry_from_item,
)
from worker.jobs import incremental
from worker.results import write_if_unchanged
from worker.shared_fields import share_fields_set

log = logging.getLogger(__name__)

__all__ = [
    "CN_MAX",
    "INVENTORY_KEY",
    "CertificateEntry",
    "CertificateSummary",
    "ExpiringCertificate",
    "InvalidStateError",
    "InventoryState",
    "StoreInventory",
    "apply_job_result",
    "common_name_of_subject",
    "entry_from_item",
    "parse_document",
    "parse_within",
    "store_id",
    "store_id_of",
]

MAX_TOMBSTONES = 1000
"""Removal tombstones kept per store between inventories (oldest dropped first)."""

_WRITE_ATTEMPTS = 50


_VALIDATED_MAX = 4
_VALIDATED: dict[tuple[str, str], tuple[bytes, StoreInventory]] = {}
"""(hash key, store id) → (the document's exact bytes, the model) of the last documents this
process validated or wrote (at most :data:`_VALIDATED_MAX`, the most recent). A document read
back with exactly these bytes is the same valid document: a 5,000-certificate store's 2.3 MB
document is validated at most once per process and change (0.05 to 0.17 s each) instead of before
and after every inventory. Any other bytes are validated in full (untrusted input). Documents
are immutable in use (updates go through ``model_copy``)."""


_CACHE_LOCK = threading.Lock()
"""Serialises :func:`_remember` (-P threads: two threads evicting the same oldest document
failed a job with KeyError, or RuntimeError iterating the cache another thread changed; reads
stay lock-free, a ``dict.get`` is atomic)."""


def _remember(cache_key: tuple[str, str], data: bytes, doc: StoreInventory) -> None:
    with _CACHE_LOCK:
        _VALIDATED.pop(cache_key, None)
        _VALIDATED[cache_key] = (data, doc)
        while len(_VALIDATED) > _VALIDATED_MAX:
            del _VALIDATED[next(iter(_VALIDATED))]
        for stale in [k for k in list(_WRITTEN) if k not in _VALIDATED]:  # list(): one atomic copy
            _WRITTEN.pop(stale, None)  # (a threads pool may purge the same key at once)


_WRITTEN: dict[tuple[str, str], tuple[bytes, list[CertificateEntry], int]] = {}
"""(hash key, store id) → (the document bytes this process wrote last, its ``certificates``
list, where that list's JSON starts in them): an update that keeps the very same list (an
unchanged re-inventory, a failure note) reuses those bytes instead of serialising 5,000 entries
again (~10 ms). Only for stores in :data:`_VALIDATED` (same bound)."""

_CERTIFICATES_FIELD = b',"certificates":'
_ENTRIES_JSON = TypeAdapter(list[CertificateEntry])


def _document_json(
    cache_key: tuple[str, str], before: StoreInventory, doc: StoreInventory
) -> tuple[bytes, int]:
    """``doc`` as stored (JSON: the other fields, then ``certificates`` last) and the offset of
    the certificates array in it. The array is copied from the bytes this process wrote for
    ``before`` when ``doc`` keeps its very list (:data:`_WRITTEN`; the document read back was
    exactly those bytes), else serialised. ``json.loads`` of it equals ``json.loads`` of
    ``doc.model_dump_json()``."""
    head = doc.model_dump_json(exclude={"certificates"}).encode("utf-8")
    hit = _WRITTEN.get(cache_key)
    validated = _VALIDATED.get(cache_key)
    if (
        hit is not None
        and validated is not None
        and validated[1] is before
        and validated[0] is hit[0]
        and hit[1] is before.certificates
        and doc.certificates is before.certificates
    ):
        body = hit[0][hit[2] : -1]
    else:
        body = _ENTRIES_JSON.dump_json(doc.certificates)
    body_at = len(head) - 1 + len(_CERTIFICATES_FIELD)
    return b"".join((head[:-1], _CERTIFICATES_FIELD, body, b"}")), body_at


# --- the state ------------------------------------------------------------------------------


class StateWriter(Protocol):
    """Runs the compare-and-set of one store's document (see the module docstring)."""

    def write_state(self, key: str, sid: str, expected: str, document: str | bytes) -> tuple[bool, Any]:
        """Write ``document`` (JSON text or UTF-8 bytes) to field ``sid`` of hash ``key`` if its
        SHA-1 is ``expected`` ('': absent): (True, None), or (False, the current document)
        without writing."""
        ...


class InventoryState(InventoryReader):
    """Read (:class:`producer.inventory_model.InventoryReader`: ``get``, ``get_by_id``,
    ``stores``, ``expiring``) and update the per-store inventory state in Redis.

    ``client`` may decode responses or not. All times are Unix seconds (float) or aware
    datetimes as documented per method; thumbprints upper-case hex. Invalid documents read back
    are counted in ``wincert_inventory_state_invalid_total``.
    """

    def __init__(
        self, client: redis.Redis, key: str = INVENTORY_KEY, writer: StateWriter | None = None
    ) -> None:
        super().__init__(client, key, on_invalid=metrics.INVENTORY_STATE_INVALID.inc)
        self.writer = writer
        """Runs each compare-and-set (default :func:`worker.results.write_if_unchanged`); a job's
        :class:`worker.results.Publication` publishes its result in the same script."""

    # reading (validated once: see _VALIDATED) -------------------------------------------

    def get_by_id(self, sid: str) -> StoreInventory | None:
        """The state of the store with hash field ``sid`` (None: unknown or invalid); a document
        byte-identical to one this process validated (or wrote) is not validated again."""
        raw = self.client.hget(self.key, sid)
        return None if raw is None else self._parse_once(sid, raw)

    def _parse_once(self, sid: str, raw: Any) -> StoreInventory | None:
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
        cache_key = (self.key, sid)
        hit = _VALIDATED.get(cache_key)
        if hit is not None and hit[0] == data:
            return hit[1]
        doc = self._parse(sid, raw)
        if doc is not None:
            for entry in doc.certificates:  # kept in _VALIDATED: one fields set per class
                share_fields_set(entry)
                if entry.details is not None:
                    share_fields_set(entry.details)
                    for san in entry.details.sans:
                        share_fields_set(san)
            _remember(cache_key, data, doc)
        return doc

    # writing -----------------------------------------------------------------------------

    def record_inventory(
        self, store: StoreRef, items: Sequence[CertificateItem], started_at: datetime
    ) -> StoreInventory:
        """Replace the store's certificates by a successful inventory that started at
        ``started_at`` (changes recorded after that instant are kept)."""
        started = started_at.timestamp()

        def change(doc: StoreInventory) -> StoreInventory:
            removed = {a: t for a, t in doc.removed.items() if t > started}
            last = max(started, doc.last_inventory or 0.0)
            if not removed and _as_recorded(doc.certificates, items):
                # the store exactly as recorded: the entries (and their seen) stay as they are
                return doc.model_copy(update={"removed": removed, "last_inventory": last})
            # Items without DER (incremental inventory): keep the CN read from the DER before.
            cns = {e.thumbprint: e.subject_cn for e in doc.certificates if e.subject_cn}
            before = {e.alias: e for e in doc.certificates}
            entries = []
            for item in items:
                same = _unchanged_entry(before.get(item.alias), item)
                if same is not None:  # an incremental inventory's known certificate: no re-parse
                    entries.append(_with_seen(same, started))
                    continue
                e = entry_from_item(item, started)
                if not item.der_b64 and e.thumbprint in cns:
                    e = e.model_copy(update={"subject_cn": cns[e.thumbprint]})
                entries.append(e)
                if doc.store_type is StoreType.WIN_CERT:
                    incremental.remember_item(e, item)  # the next incremental run reuses it
            by_alias = {e.alias: e for e in entries if e.alias not in removed}
            for kept in doc.certificates:
                if kept.seen > started and kept.alias not in by_alias:
                    by_alias[kept.alias] = kept
            return doc.model_copy(
                update={"certificates": list(by_alias.values()), "removed": removed, "last_inventory": last}
            )

        return self._update(store, change)

    def record_failure(self, store: StoreRef, code: str, at: datetime) -> StoreInventory:
        """Note a failed inventory (the store becomes known; its certificates stay)."""

        def change(doc: StoreInventory) -> StoreInventory:
            return doc.model_copy(update={"last_failure": at.timestamp(), "last_failure_code": code[:64]})

        return self._update(store, change)

    def record_added(
        self,
        store: StoreRef,
        certificate: CertificateSummary,
        at: datetime,
        *,
        alias: str | None = None,
        binding: str | None = None,
        replaces: str | None = None,
        instances: Sequence[str] = (),
    ) -> StoreInventory:
        """Record a certificate installed (and bound) by a job that finished at ``at``.

        Args:
            alias: the inventory alias; default the thumbprint.
            binding: IISU ``site:ip:port:host``: any other certificate's entry for that binding
                is replaced (a binding has one certificate).
            replaces: IISU renewal: every binding of this old thumbprint now uses the new one.
            instances: WinSQL instance names now bound to the certificate (removed from the
                entries of other certificates; entries left without an instance are dropped).
        """
        seen = at.timestamp()
        thumb = certificate.thumbprint

        def change(doc: StoreInventory) -> StoreInventory:
            entries = list(doc.certificates)
            removed = dict(doc.removed)
            new: list[CertificateEntry] = []

            def make(entry_alias: str, entry_binding: str | None) -> CertificateEntry:
                return CertificateEntry(
                    alias=entry_alias,
                    thumbprint=thumb,
                    subject_cn=certificate.subject_cn,
                    not_after=certificate.not_after.timestamp(),
                    binding=entry_binding,
                    seen=seen,
                )

            if doc.store_type is StoreType.IISU:
                wanted = {binding.lower(): binding} if binding else {}
                if replaces:
                    for e in entries:
                        if e.thumbprint == replaces.upper() and e.binding:
                            wanted.setdefault(e.binding.lower(), e.binding)
                gone = [e for e in entries if (e.binding or "").lower() in wanted]
                for e in gone:
                    removed[e.alias] = seen
                entries = [e for e in entries if (e.binding or "").lower() not in wanted]
                new = [make(f"{thumb}:{b}", b) for b in sorted(wanted.values())]
            elif doc.store_type is StoreType.WIN_SQL:
                names = {n.strip().upper() for n in instances if n.strip()}
                kept: list[CertificateEntry] = []
                for e in entries:
                    if e.thumbprint == thumb:
                        names |= {n.strip().upper() for n in (e.binding or "").split(",") if n.strip()}
                        continue
                    bound = [n for n in (e.binding or "").split(",") if n.strip()]
                    left = [n for n in bound if n.strip().upper() not in names]
                    if e.binding and not left:
                        removed[e.alias] = seen
                        continue
                    kept.append(e.model_copy(update={"binding": ",".join(left) or None}) if e.binding else e)
                entries = kept
                new = [make(alias or thumb, ",".join(sorted(names)) or None)]
            else:
                new = [make(alias or thumb, binding)]
            by_alias = {e.alias: e for e in entries}
            for e in new:
                by_alias[e.alias] = e
                removed.pop(e.alias, None)
            return doc.model_copy(update={"certificates": list(by_alias.values()), "removed": removed})

        return self._update(store, change)

    def record_removed(self, store: StoreRef, alias: str, at: datetime) -> StoreInventory:
        """Record that a job that finished at ``at`` removed ``alias`` (WinCert/WinSQL: a
        thumbprint, every entry with it goes; IISU: the one binding's alias)."""
        seen = at.timestamp()
        key = alias.strip()

        def change(doc: StoreInventory) -> StoreInventory:
            removed = dict(doc.removed)
            if doc.store_type is StoreType.IISU:
                gone = {e.alias for e in doc.certificates if e.alias.upper() == key.upper()} | {key}
            else:
                gone = {e.alias for e in doc.certificates if e.thumbprint == key.upper()} | {key.upper()}
            for a in gone:
                removed[a] = seen
            entries = [e for e in doc.certificates if e.alias not in gone]
            return doc.model_copy(update={"certificates": entries, "removed": removed})

        return self._update(store, change)

    def version_key(self, sid: str) -> str:
        """The per-store write counter every update WATCHes and increments (so writers of
        different stores never conflict): ``wincert:inventory:version:<store id>``."""
        return f"{self.key}:version:{sid}"

    def forget(self, store: StoreRef) -> bool:
        """Drop a store's document (an operator decommissioned it); True if it existed."""
        sid = store_id_of(store)
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.key, sid)
        pipe.delete(self.version_key(sid))
        return bool(pipe.execute()[0])

    def _update(self, store: StoreRef, change: Any) -> StoreInventory:
        sid = store_id_of(store)
        cache_key = (self.key, sid)
        known = _VALIDATED.get(cache_key)
        base: bytes | None = known[0] if known is not None else None  # first guess (see module doc)
        for attempt in range(_WRITE_ATTEMPTS):
            doc = self._parse_once(sid, base) if base is not None else None
            if doc is None:
                doc = StoreInventory(
                    store_type=store.store_type, host=store.host_key, store_path=store.store_path
                )
            updated: StoreInventory = change(doc)
            if len(updated.removed) > MAX_TOMBSTONES:
                newest = sorted(updated.removed.items(), key=lambda kv: kv[1])[-MAX_TOMBSTONES:]
                updated = updated.model_copy(update={"removed": dict(newest)})
            updated = updated.model_copy(update={"updated": time.time()})
            written, body_at = _document_json(cache_key, doc, updated)
            expected = "" if base is None else hashlib.sha1(base, usedforsecurity=False).hexdigest()
            if self.writer is not None:
                ok, current = self.writer.write_state(self.key, sid, expected, written)
            else:
                ok, current = write_if_unchanged(self.client, self.key, sid, expected, written)
            if ok:
                _remember(cache_key, written, updated)
                _WRITTEN[cache_key] = (written, updated.certificates, body_at)
                return updated
            # current: untrusted, validated when parsed
            base = current if current is None or isinstance(current, bytes) else str(current).encode()
            if attempt:  # another writer keeps winning: back off a little (jittered)
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise RuntimeError(f"inventory state of {sid!r}: too many concurrent writers, gave up")


# --- what tasks call --------------------------------------------------------------------------


def apply_job_result(
    state: InventoryState, job: AnyJob, result: JobResult, certificate_der: bytes | None = None
) -> StoreInventory | None:
    """Update the state from one finished job (never raises for a job it cannot use).

    * inventory: success/warning → :meth:`InventoryState.record_inventory` (a ``partial``
      inventory skipped unreadable certificates: the ones read are recorded); failure →
      :meth:`InventoryState.record_failure`;
    * add / reenrollment_complete (success or warning): :meth:`InventoryState.record_added` with the
      certificate summarised from ``certificate_der`` (add: the leaf the worker parsed) or the
      completion job's certificate text;
    * remove (success or warning): :meth:`InventoryState.record_removed`.

    Returns the new document, or None when the job changed nothing the state records.
    """
    finished = result.finished_at or datetime.now(UTC)
    store = job.store
    if isinstance(job, InventoryJob):
        if result.status is Status.FAILURE:
            return state.record_failure(store, result.code.value, finished)
        return state.record_inventory(store, result.items or [], result.started_at or finished)
    if result.status is Status.FAILURE:
        return None
    if isinstance(job, RemoveJob):
        return state.record_removed(store, job.alias, finished)
    if isinstance(job, AddJob | ReenrollmentCompleteJob):
        try:
            if certificate_der is not None:
                summary = CertificateSummary.from_der(certificate_der)
            elif isinstance(job, ReenrollmentCompleteJob):
                summary = CertificateSummary.from_text(job.certificate)
            else:
                return None
        except (ValueError, IndexError) as exc:
            log.warning("inventory state not updated: the installed certificate is unreadable (%s)", exc)
            return None
        if result.thumbprint and result.thumbprint.upper() != summary.thumbprint:
            summary = CertificateSummary(result.thumbprint.upper(), summary.subject_cn, summary.not_after)
        entry = job.entry
        binding: str | None = None
        instances: list[str] = []
        if store.store_type is StoreType.IISU:
            binding = _iis_binding(entry)
        elif store.store_type is StoreType.WIN_SQL:
            instances = list(_sql_instances(entry))
        replaces = job.renewal_thumbprint if isinstance(job, AddJob) else None
        return state.record_added(
            store, summary, finished, binding=binding, replaces=replaces, instances=instances
        )
    return None


def _iis_binding(entry: Any) -> str | None:
    """``site:ip:port:host`` of IISU entry parameters (the alias without its thumbprint)."""
    site = getattr(entry, "site_name", None)
    if not site:
        return None
    ip = getattr(entry, "ip_address", None) or "*"
    port = getattr(entry, "port", None) or 443
    host = getattr(entry, "host_name", None) or ""
    return f"{site}:{ip}:{port}:{host}"


def _sql_instances(entry: Any) -> Iterable[str]:
    value = getattr(entry, "instance_name", None)
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def dump(doc: StoreInventory) -> str:
    """The JSON document as stored (for tests and tools)."""
    return json.dumps(doc.model_dump(mode="json"))
