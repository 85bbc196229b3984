"""worker.inventory_state against a real redis-server: inventories, changes, ordering, hostile
documents, concurrent writers."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from producer.codes import ResultCode
from producer.inventory_model import INVENTORY_KEY, InventoryReader, parse_within, store_id
from producer.messages import CertificateItem, JobResult, JobType, Status, StoreRef, parse_job
from worker import metrics
from worker.inventory_state import CertificateSummary, InventoryState, apply_job_result

NOW = datetime.now(UTC).replace(microsecond=0)
_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(cn: str, not_after: datetime) -> bytes:
    """A self-signed certificate (DER) with subject CN ``cn`` expiring at ``not_after``."""
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "T")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=400))
        .not_valid_after(not_after)
        .sign(_KEY, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def item(der: bytes, alias: str | None = None, **parameters: Any) -> CertificateItem:
    cert = x509.load_der_x509_certificate(der)
    return CertificateItem(
        alias=alias or thumb(der),
        thumbprint=thumb(der),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial_number=format(cert.serial_number, "X"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        has_private_key=False,
        der_b64=base64.b64encode(der).decode(),
        parameters=parameters,
    )


def store(store_type: str = "WinCert", host: str = "Web01.Contoso.com", path: str = "My") -> StoreRef:
    return StoreRef(store_type=store_type, client_machine=host, store_path=path)  # type: ignore[arg-type]


def test_inventory_is_kept_without_der_and_expiring_is_soonest_first(redis_client: Any) -> None:
    state = InventoryState(redis_client)
    soon, later, gone = (
        make_cert(cn, NOW + d)
        for cn, d in (
            ("soon.contoso.com", timedelta(days=3)),
            ("later", timedelta(days=200)),
            ("gone", timedelta(days=-1)),
        )
    )
    state.record_inventory(store(), [item(later), item(soon), item(gone)], NOW)
    raw = redis_client.hget(INVENTORY_KEY, "WinCert|web01.contoso.com|my")
    assert raw is not None and "der" not in raw and base64.b64encode(soon).decode()[:40] not in raw
    doc = state.get(store(path="MY"))  # store paths are case-insensitive
    assert doc is not None
    assert doc.host == "web01.contoso.com" and doc.last_inventory == NOW.timestamp()
    assert {c.subject_cn for c in doc.certificates} == {"soon.contoso.com", "later", "gone"}
    rows = InventoryReader(redis_client).expiring(timedelta(days=30), now=NOW)
    assert [r.subject_cn for r in rows] == ["gone", "soon.contoso.com"]
    assert rows[1].thumbprint == thumb(soon) and rows[1].not_after == NOW + timedelta(days=3)
    assert rows[1].as_json()["not_after"].endswith("Z")


def test_a_change_after_an_inventory_started_survives_it(redis_client: Any) -> None:
    state = InventoryState(redis_client)
    a, b, c = (make_cert(n, NOW + timedelta(days=90)) for n in "abc")
    state.record_inventory(store(), [item(a), item(b)], NOW - timedelta(minutes=10))
    # add c and remove a at NOW; an inventory that STARTED before (NOW-1min) and still saw a, not c
    state.record_added(store(), CertificateSummary.from_der(c), NOW)
    state.record_removed(store(), thumb(a).lower(), NOW)
    doc = state.record_inventory(store(), [item(a), item(b)], NOW - timedelta(minutes=1))
    assert doc.thumbprints() == {thumb(b), thumb(c)}
    # an inventory that started after both changes is the truth
    doc = state.record_inventory(store(), [item(a)], NOW + timedelta(minutes=1))
    assert doc.thumbprints() == {thumb(a)} and doc.removed == {}


def test_iisu_binding_and_renewal(redis_client: Any) -> None:
    state = InventoryState(redis_client)
    iis = store("IISU", path="WebHosting")
    old, new, other = (
        make_cert(n, NOW + timedelta(days=d)) for n, d in (("old", 5), ("new", 400), ("o", 50))
    )
    state.record_inventory(
        iis,
        [
            item(old, f"{thumb(old)}:Shop:*:443:shop.contoso.com"),
            item(old, f"{thumb(old)}:Shop:*:8443:"),
            item(other, f"{thumb(other)}:Blog:*:443:"),
        ],
        NOW - timedelta(minutes=5),
    )
    job = parse_job(
        {
            "job_type": "add",
            "job_id": str(uuid.uuid4()),
            "store": {
                "store_type": "IISU",
                "client_machine": "web01.contoso.com",
                "store_path": "WebHosting",
            },
            "certificate": {"contents_plaintext": base64.b64encode(new).decode()},
            "renewal_thumbprint": thumb(old),
            "entry_parameters": {"SiteName": "Blog", "Port": "443"},
        }
    )
    result = JobResult(
        job_id=job.job_id,
        job_type=JobType.ADD,
        status=Status.SUCCESS,
        code=ResultCode.OK,
        message="ok",
        thumbprint=thumb(new),
        finished_at=NOW,
    )
    doc = apply_job_result(state, job, result, new)
    assert doc is not None
    assert sorted(c.alias for c in doc.certificates) == sorted(
        [
            f"{thumb(new)}:Blog:*:443:",
            f"{thumb(new)}:Shop:*:443:shop.contoso.com",
            f"{thumb(new)}:Shop:*:8443:",
        ]
    )
    assert {c.subject_cn for c in doc.certificates} == {"new"}
    removed = state.record_removed(iis, f"{thumb(new)}:Shop:*:8443:", NOW + timedelta(seconds=1))
    assert len(removed.certificates) == 2


def test_winsql_instances_move_to_the_new_certificate(redis_client: Any) -> None:
    state = InventoryState(redis_client)
    sql = store("WinSQL")
    a, b = make_cert("a", NOW + timedelta(days=9)), make_cert("b", NOW + timedelta(days=99))
    state.record_inventory(sql, [item(a, InstanceName="MSSQLSERVER,REPORTING")], NOW - timedelta(hours=1))
    doc = state.record_added(sql, CertificateSummary.from_der(b), NOW, instances=["reporting"])
    by = {c.thumbprint: c.binding for c in doc.certificates}
    assert by == {thumb(a): "MSSQLSERVER", thumb(b): "REPORTING"}
    doc = state.record_added(sql, CertificateSummary.from_der(b), NOW, instances=["MSSQLSERVER"])
    assert {c.thumbprint: c.binding for c in doc.certificates} == {thumb(b): "MSSQLSERVER,REPORTING"}


def test_failures_make_a_store_known_and_inventory_results_apply(redis_client: Any) -> None:
    state = InventoryState(redis_client)
    job = parse_job(
        {
            "job_type": "inventory",
            "store": {"store_type": "WinCert", "client_machine": "db9", "store_path": "Root"},
        }
    )
    failed = JobResult(
        job_id=job.job_id,
        job_type=JobType.INVENTORY,
        status=Status.FAILURE,
        code=ResultCode.HOST_UNREACHABLE,
        message="x",
        finished_at=NOW,
    )
    doc = apply_job_result(state, job, failed)
    assert doc is not None and doc.last_inventory is None and doc.last_failure_code == "host_unreachable"
    cert = make_cert("root", NOW + timedelta(days=1000))
    ok = failed.model_copy(
        update={"status": Status.SUCCESS, "code": ResultCode.OK, "items": [item(cert)], "started_at": NOW}
    )
    doc = apply_job_result(state, job, ok)
    assert doc is not None and doc.last_inventory == NOW.timestamp() and doc.thumbprints() == {thumb(cert)}


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps(
            {
                "store_type": "WinCert",
                "host": "h",
                "store_path": "My",
                "certificates": [{"alias": "x", "thumbprint": "nothex", "not_after": 1, "seen": 1}],
            }
        ),
        json.dumps({"store_type": "Evil", "host": "h", "store_path": "My"}),
        json.dumps(
            {
                "store_type": "WinCert",
                "host": "h",
                "store_path": "My",
                "certificates": [{"alias": "x", "thumbprint": "A" * 40, "not_after": 1e300, "seen": 1}],
            }
        ),
        "[" * 100_000,
    ],
)
def test_hostile_documents_are_ignored_and_counted(redis_client: Any, raw: str) -> None:
    good = make_cert("good", NOW + timedelta(days=1))
    state = InventoryState(redis_client)
    state.record_inventory(store(host="good"), [item(good)], NOW)
    redis_client.hset(INVENTORY_KEY, store_id("WinCert", "bad", "my"), raw)
    before = metrics.INVENTORY_STATE_INVALID._value.get()
    assert [s.host for s in state.stores()] == ["good"]
    assert metrics.INVENTORY_STATE_INVALID._value.get() == before + 1
    # a write over an invalid document starts afresh instead of failing
    doc = state.record_inventory(store(host="bad"), [item(good)], NOW)
    assert doc.thumbprints() == {thumb(good)}


def test_concurrent_writers_lose_nothing(redis_client: Any, redis_url: str) -> None:
    import redis

    certs = [make_cert(f"c{i}", NOW + timedelta(days=i + 1)) for i in range(24)]

    def writer(chunk: list[bytes]) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        own = InventoryState(client)
        for der in chunk:
            own.record_added(store(), CertificateSummary.from_der(der), NOW)
        client.close()

    threads = [threading.Thread(target=writer, args=(certs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    doc = InventoryState(redis_client).get(store())
    assert doc is not None and doc.thumbprints() == {thumb(d) for d in certs}


def test_parse_within() -> None:
    assert parse_within("30d") == timedelta(days=30)
    assert parse_within("12h") == timedelta(hours=12)
    assert parse_within("90") == timedelta(seconds=90)
    with pytest.raises(ValueError, match="30d"):
        parse_within("soon")


def test_writers_of_different_stores_do_not_hold_each_other_up(redis_url: str) -> None:
    """Each update compares and sets its own store's field only: six busy writers of six stores
    all finish (with one WATCH on the whole hash they conflicted until they gave up)."""
    import redis

    summary = CertificateSummary("A" * 40, "cn", NOW + timedelta(days=9))
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            own = InventoryState(client)
            for _ in range(150):
                own.record_added(store(host=f"h{i}"), summary, NOW)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    readback = InventoryState(redis.Redis.from_url(redis_url, decode_responses=True))
    assert {s.host for s in readback.stores()} >= {f"h{i}" for i in range(6)}


def test_an_incremental_inventory_keeps_known_entries_and_rebuilds_changed_ones(redis_client: Any) -> None:
    from worker.jobs import incremental

    state = InventoryState(redis_client)
    a, b = (make_cert(n, NOW + timedelta(days=90)) for n in ("keep.contoso.com", "other.contoso.com"))
    first = state.record_inventory(store(), [item(a), item(b)], NOW - timedelta(minutes=5))
    by_thumb = {e.thumbprint: e for e in first.certificates}
    # what incremental inventory reports for known certificates (no DER)
    known = [
        incremental.item_from_known(by_thumb[thumb(d)], incremental.KnownRecord(thumb(d), True, "f"))
        for d in (a, b)
    ]
    changed = known[1].model_copy(update={"subject": "CN=renamed.contoso.com"})
    assert incremental.made_from(known[0], by_thumb[thumb(a)])
    assert not incremental.made_from(changed, by_thumb[thumb(b)])  # compared field by field
    assert not incremental.made_from(known[0], by_thumb[thumb(b)])
    doc = state.record_inventory(store(), [known[0], changed], NOW)
    after = {e.thumbprint: e for e in doc.certificates}
    # the unchanged one is kept as it was (CN read from the DER, details), seen now
    expected = by_thumb[thumb(a)].model_copy(update={"seen": NOW.timestamp()})
    assert after[thumb(a)] == expected
    assert after[thumb(a)].model_fields_set == expected.model_fields_set
    assert after[thumb(a)].model_dump_json() == expected.model_dump_json()
    # an unchanged re-inventory reuses the items it built before (same inputs: same item)
    again_known = incremental.item_from_known(after[thumb(a)], incremental.KnownRecord(thumb(a), True, "f"))
    assert again_known is known[0]
    other = incremental.item_from_known(after[thumb(a)], incremental.KnownRecord(thumb(a), False, "f"))
    assert other is not known[0] and not other.has_private_key
    # the one whose fields differ is rebuilt from the item (its CN still the one read from the DER)
    assert after[thumb(b)].details is not None
    assert after[thumb(b)].details.subject == "CN=renamed.contoso.com"
    assert after[thumb(b)].subject_cn == "other.contoso.com"
    again = state.get(store())
    assert again == doc  # read back: the same document


def test_a_full_inventory_without_der_seeds_the_items_of_the_next_incremental_one(redis_client: Any) -> None:
    from worker.jobs import incremental

    state = InventoryState(redis_client)
    when = NOW.replace(microsecond=0) + timedelta(days=30)
    der = make_cert("seeded.contoso.com", when)
    reported = item(der).model_copy(update={"der_b64": "", "friendly_name": "web"})
    doc = state.record_inventory(store(path="Seeded"), [reported], NOW)
    [entry] = doc.certificates
    again = incremental.item_from_known(entry, incremental.KnownRecord(entry.thumbprint, False, "web"))
    assert again is reported  # reused, not rebuilt
    # ...and it is exactly what building it from the state gives
    assert again == incremental._build_item(
        entry, entry.details, incremental.KnownRecord(entry.thumbprint, False, "web")
    )  # type: ignore[arg-type]
    # another private-key flag or friendly name: built anew
    built = incremental.item_from_known(entry, incremental.KnownRecord(entry.thumbprint, True, "web"))
    assert built is not reported and built.has_private_key
    # an item with DER or sub-second times is never kept
    with_der = item(make_cert("der.contoso.com", when))
    doc = state.record_inventory(store(path="Seeded2"), [with_der], NOW)
    key = (with_der.thumbprint, doc.certificates[0].not_after, False, "")
    assert key not in incremental._ITEMS


def _inventory_result(items: list[CertificateItem]) -> JobResult:
    return JobResult(
        job_id=uuid.uuid4(),
        job_type=JobType.INVENTORY,
        status=Status.SUCCESS,
        code=ResultCode.OK,
        message="Inventory completed.",
        items=items,
        started_at=NOW,
        finished_at=NOW,
    )


def test_a_state_write_publishes_the_jobs_result_in_the_same_script(redis_client: Any) -> None:
    from producer.messages import RESULTS_STREAM
    from worker import results

    der = make_cert("published.contoso.com", NOW + timedelta(days=30))
    result = _inventory_result([item(der)])
    key = f"wincert:job:{result.job_id}:result"
    publication = results.prepare(redis_client, result, 100, keep_as=key, expires=60)
    doc = InventoryState(redis_client, writer=publication).record_inventory(store(), [item(der)], NOW)
    assert doc.thumbprints() == {thumb(der)}
    assert publication.entry  # published with the state
    assert JobResult.model_validate_json(redis_client.get(key)) == result
    assert publication.publish() == publication.entry  # the publish after it sends nothing
    [(entry, fields)] = redis_client.xrange(RESULTS_STREAM)
    assert entry == publication.entry and JobResult.model_validate_json(fields["result"]) == result
    # a second write (published already) writes the state alone
    other = make_cert("other.contoso.com", NOW + timedelta(days=30))
    InventoryState(redis_client, writer=publication).record_inventory(store(), [item(other)], NOW)
    assert redis_client.xlen(RESULTS_STREAM) == 1
    assert InventoryState(redis_client).get(store()).thumbprints() == {thumb(other)}  # type: ignore[union-attr]


def test_a_state_write_that_meets_a_newer_document_publishes_nothing_until_it_is_applied(
    redis_client: Any,
) -> None:
    """Another worker wrote the store after this one's read: the script writes nothing and
    publishes nothing, returns the newer document; the change applied to it is written and the
    result published then, once."""
    from producer.inventory_model import store_id_of
    from producer.messages import RESULTS_STREAM
    from worker import inventory_state as module
    from worker import results

    mine, theirs = (make_cert(f"{n}.contoso.com", NOW + timedelta(days=30)) for n in ("mine", "theirs"))
    sid = store_id_of(store())
    stale = InventoryState(redis_client).record_inventory(store(), [], NOW - timedelta(minutes=5))
    stale_bytes = redis_client.hget(INVENTORY_KEY, sid).encode()
    # another process writes after this one's read
    InventoryState(redis_client).record_added(store(), CertificateSummary.from_der(theirs), NOW)
    raw = redis_client.hget(INVENTORY_KEY, sid)
    module._VALIDATED.clear()
    module._remember((INVENTORY_KEY, sid), stale_bytes, stale)  # this process's read: now stale
    result = _inventory_result([item(mine)])
    key = f"wincert:job:{result.job_id}:result"
    publication = results.prepare(redis_client, result, 100, keep_as=key, expires=60)
    ok, current = publication.write_state(INVENTORY_KEY, sid, hashlib.sha1(stale_bytes).hexdigest(), "{}")
    assert (ok, current) == (False, raw)
    assert redis_client.xlen(RESULTS_STREAM) == 0 and not redis_client.exists(key)
    doc = InventoryState(redis_client, writer=publication).record_added(
        store(), CertificateSummary.from_der(mine), NOW + timedelta(seconds=2)
    )
    assert doc.thumbprints() == {thumb(mine), thumb(theirs)}  # the newer document's entry kept
    assert redis_client.xlen(RESULTS_STREAM) == 1 and redis_client.exists(key)


def test_a_store_found_as_recorded_keeps_the_document_s_entries(redis_client: Any) -> None:
    from worker.jobs import incremental

    state = InventoryState(redis_client)
    ders = [make_cert(f"same{n}.contoso.com", NOW + timedelta(days=90)) for n in range(3)]
    reported = [item(d).model_copy(update={"der_b64": ""}) for d in ders]  # a full run without DER
    first = state.record_inventory(store(path="Same"), reported, NOW - timedelta(minutes=5))
    known = [
        incremental.item_from_known(e, incremental.KnownRecord(e.thumbprint, False, ""))
        for e in first.certificates
    ]
    assert all(k is r for k, r in zip(known, reported, strict=True))
    doc = state.record_inventory(store(path="Same"), known, NOW)
    assert doc.certificates is first.certificates  # the same entries, their seen unchanged
    assert doc.last_inventory == NOW.timestamp() and doc.updated >= first.updated
    raw = redis_client.hget(INVENTORY_KEY, "WinCert|web01.contoso.com|same")
    assert json.loads(raw) == json.loads(doc.model_dump_json())  # stored with the entries reused
    assert InventoryReader(redis_client).get(store(path="Same")) == doc
    # one certificate's flag changed: that entry is rebuilt, every entry seen at the new start
    changed = [known[0].model_copy(update={"has_private_key": True}), *known[1:]]
    later = NOW + timedelta(minutes=1)
    doc = state.record_inventory(store(path="Same"), changed, later)
    assert [e.seen for e in doc.certificates] == [later.timestamp()] * 3
    assert json.loads(redis_client.hget(INVENTORY_KEY, "WinCert|web01.contoso.com|same")) == json.loads(
        doc.model_dump_json()
    )
    # a newer tombstone, or an entry missing from the report: the full path (entry dropped)
    state.record_removed(store(path="Same"), known[2].thumbprint, later + timedelta(seconds=1))
    doc = state.record_inventory(store(path="Same"), known, later)
    assert [e.thumbprint for e in doc.certificates] == [k.thumbprint for k in known[:2]]
