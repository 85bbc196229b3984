"""worker.jobs.incremental: which state is a baseline, and the changes summary."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

import pytest

from producer.inventory_model import CertificateDetails, CertificateEntry, StoreInventory
from producer.messages import CertificateItem, StoreRef
from worker.jobs import incremental

A, B, C = "A" * 40, "B" * 40, "C" * 40


def store() -> StoreRef:
    return StoreRef.model_validate({"store_type": "WinCert", "client_machine": "Web01", "store_path": "my"})


def entry(thumb: str, details: bool = True) -> CertificateEntry:
    d = (
        CertificateDetails(subject="CN=x", issuer="CN=x", serial_number="01", not_before=1.0)
        if details
        else None
    )
    return CertificateEntry(alias=thumb, thumbprint=thumb, not_after=2.0, seen=1.0, details=d)


def doc(**fields: object) -> StoreInventory:
    values: dict[str, object] = {
        "store_type": "WinCert",
        "host": "web01",
        "store_path": "My",
        "last_inventory": 1.0,
        "certificates": [entry(A), entry(B, details=False)],
    }
    values.update(fields)
    return StoreInventory.model_validate(values)


def item(thumb: str) -> CertificateItem:
    now = datetime.now(UTC)
    return CertificateItem(
        alias=thumb, thumbprint=thumb, subject="", issuer="", serial_number="01",
        not_before=now, not_after=now, has_private_key=False, der_b64="",
    )  # fmt: skip


def test_only_this_stores_inventoried_document_is_a_baseline() -> None:
    assert incremental.baseline(store(), doc()) is not None
    assert incremental.baseline(store(), None) is None
    assert incremental.baseline(store(), doc(last_inventory=None)) is None
    assert incremental.baseline(store(), doc(host="web02")) is None
    assert incremental.baseline(store(), doc(store_path="Root")) is None
    assert incremental.baseline(store(), doc(store_type="WinSQL")) is None


def test_known_entries_are_those_with_details() -> None:
    assert set(incremental.known_entries(store(), doc())) == {A}
    assert incremental.known_entries(store(), doc(host="other")) == {}


def test_changes_count_thumbprints_and_ignore_skipped_certificates() -> None:
    changes = incremental.changes(doc(), [item(A), item(C)], [f"Skipped certificate {B.lower()}: unreadable"])
    assert changes is not None
    assert (changes.added, changes.removed, changes.unchanged) == (1, 0, 1)
    assert changes.added_thumbprints == [C] and changes.removed_thumbprints == []
    gone = incremental.changes(doc(), [item(A)])
    assert gone is not None and gone.removed_thumbprints == [B]
    assert incremental.changes(None, [item(A)]) is None


def test_the_known_certificates_record_must_be_well_formed() -> None:
    sent = [A, B, C]
    record = {"KnownCertificates": [[1, True, "web"], [0, False, None], [1, False, "again"]]}
    shorts, warnings = incremental.parse_known_certificates(record, sent)
    assert [(r.thumbprint, r.has_private_key, r.friendly_name) for r in shorts] == [
        (B, True, "web"),
        (A, False, ""),
    ]
    assert warnings == []
    entries = [[3, True, ""], [True, True, ""], "x", [2, "yes", ""], [0, True, 5], [1, True]]
    bad = {"KnownCertificates": entries}
    shorts, warnings = incremental.parse_known_certificates(bad, sent)
    assert shorts == []
    assert warnings == [
        "Skipped known-certificate entry 0: Index is not a position in KnownThumbprint",
        "Skipped known-certificate entry 1: Index is not a position in KnownThumbprint",
        "Skipped known-certificate entry 2: Index is not a position in KnownThumbprint",
        f"Skipped certificate {C}: HasPrivateKey is not a boolean",
        f"Skipped certificate {A}: FriendlyName is not a string",
        f"Skipped certificate {B}: an entry must be [Index, HasPrivateKey, FriendlyName]",
    ]
    try:
        incremental.parse_known_certificates({"KnownCertificates": {"0": 1}}, sent)
    except ValueError as exc:
        assert "KnownCertificates is not a list" in str(exc)
    else:
        raise AssertionError("a non-list KnownCertificates was accepted")


def test_known_thumbprints_may_be_one_comma_separated_string_or_an_array() -> None:
    from simulator.commands.inventory import known_thumbprints

    # the worker sends ONE comma-separated string; positions are the parts' positions
    assert known_thumbprints(f"{A},{B.lower()},{A}") == {A: 0, B: 1}
    # an array (an older worker) indexes each element's parts in order; empty parts and null
    # elements take a position but match nothing
    assert known_thumbprints([A, f"{B},,{C}", None, A]) == {A: 0, B: 1, C: 3}
    assert known_thumbprints(None) == {} and known_thumbprints("") == {}


def test_a_known_certificates_record_is_reused_only_for_the_very_same_inputs() -> None:
    from worker.jobs.wincert import _known_items

    a, c = entry(A), entry(C)
    known = {A: a, C: c}
    sent = [A, C]
    text = '{"KnownCertificates": [[0, true, "web"], [1, false, null], [7, false, ""]]}'
    items, warnings = _known_items(text, known, sent) or ([], [])
    got = [(i.thumbprint, i.has_private_key, i.friendly_name) for i in items]
    assert got == [(A, True, "web"), (C, False, "")]
    assert warnings == ["Skipped known-certificate entry 2: Index is not a position in KnownThumbprint"]
    # the same record of the same entries: the same items (new lists: callers may extend them)
    again = _known_items(text, known, sent)
    assert again is not None and all(x is y for x, y in zip(again[0], items, strict=True))
    assert again[0] is not items and again[1] == warnings and again[1] is not warnings
    # another record text, or an entry that is not the same object: built from the inputs
    other = _known_items(text.replace("true", "false", 1), known, sent)
    assert other is not None and not other[0][0].has_private_key
    changed = {A: a.model_copy(update={"not_after": 3.0}), C: c}
    rebuilt = _known_items(text, changed, sent)
    assert rebuilt is not None and rebuilt[0][0].not_after.timestamp() == 3.0
    assert incremental.reused_batch(",".join(sent), text, [a]) is None  # fewer entries: no reuse


def test_at_most_batches_max_records_are_kept_the_oldest_go_first() -> None:
    incremental._BATCHES.clear()
    for n in range(incremental.BATCHES_MAX + 2):
        incremental.remember_batch(f"S{n}", "{}", [], [], [])
    assert list(incremental._BATCHES) == [f"S{n}" for n in range(2, incremental.BATCHES_MAX + 2)]
    assert incremental.reused_batch("S0", "{}", []) is None
    assert incremental.reused_batch(f"S{incremental.BATCHES_MAX + 1}", "{}", []) == ([], [])


def _build_items(first: int, count: int, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    barrier.wait()
    try:
        for n in range(first, first + count):
            thumb = f"{n:040X}"
            incremental.item_from_known(entry(thumb), incremental.KnownRecord(thumb, False, ""))
    except BaseException as exc:
        errors.append(exc)


def test_threads_building_items_at_the_bound_all_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    """-P threads: several jobs build known-certificate items at once while the items cache is
    full. Each eviction drops the oldest item; two threads dropping the same one must not fail
    a job (KeyError), nor one iterating the cache while another changes it (RuntimeError)."""
    monkeypatch.setattr(incremental, "ITEMS_CACHE_MAX", 2)
    incremental._ITEMS.clear()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter allows
    try:
        for round_ in range(50):
            barrier = threading.Barrier(4)
            errors: list[BaseException] = []
            threads = [
                threading.Thread(target=_build_items, args=(round_ * 4000 + t * 1000, 300, barrier, errors))
                for t in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            assert len(incremental._ITEMS) <= incremental.ITEMS_CACHE_MAX
    finally:
        sys.setswitchinterval(switch)
        incremental._ITEMS.clear()
