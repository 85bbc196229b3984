"""Incremental inventory end to end: producer → Redis → prefork worker → WinRM → simulator.

An inventory with ``include_der`` false sends the thumbprints the worker's inventory state knows
(``-KnownThumbprint``); the host answers those with one compact ``KnownCertificates`` record.
The results must be the same items a full inventory gives (without DER), with a ``changes`` summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from producer import Client
from producer.inventory_model import INVENTORY_KEY, store_id_of
from producer.messages import InventoryJob, JobResult, NamedCredential, Protocol, StoreRef
from simulator.config import HostConfig, SeedSpec
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

HOST = "INCR-HTTP"
COUNT = 40


def new_certificate(index: int) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"incr-{index}.contoso.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30 + index))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"incr-{index}.contoso.test")]), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER), key


@pytest.fixture(scope="module")
def istack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("incr"))
    seed = workdir / "seed"
    seed.mkdir()
    for i in range(COUNT):
        (seed / f"c{i:03}.cer").write_bytes(new_certificate(i)[0])
    hosts = [
        HostConfig(
            name=HOST,
            address="127.0.0.29",
            transport="http",
            auth=["negotiate", "ntlm"],
            seed=[SeedSpec(store="My", path=seed)],
        )
    ]
    with start_stack(workdir, redis_url, hosts) as running:
        yield running


def store(stack: Stack) -> StoreRef:
    host = stack.host(HOST)
    return StoreRef(
        store_type="WinCert",  # type: ignore[arg-type]
        client_machine=host.bind,
        port=host.port,
        store_path="My",
        protocol=Protocol.HTTP,
        credential=NamedCredential(kind="named", name=HOST.lower()),
    )


def inventory(stack: Stack, client: Client, *, include_der: bool = False) -> tuple[JobResult, int]:
    """Run one inventory; return its result and the bytes the host sent meanwhile."""
    before = stack.host(HOST).stats.snapshot()["bytes_sent"]
    job = InventoryJob(job_type="inventory", store=store(stack), include_der=include_der)
    result = client.wait(client.submit(job), 120)
    assert result.code.value == "ok", result.message
    sent: int = stack.host(HOST).stats.snapshot()["bytes_sent"] - before
    return result, sent


def last_inventory_parameters(stack: Stack) -> dict[str, Any]:
    """The parameters ``Get-WinCertInventory`` was last called with on the host."""
    calls = [p for name, p in list(stack.host(HOST).stats.journal) if name == "Get-WinCertInventory"]
    return calls[-1]


def items_of(result: JobResult) -> dict[str, dict[str, Any]]:
    assert result.items is not None
    return {i.thumbprint: i.model_dump(mode="json") for i in result.items}


def test_unchanged_added_removed_and_private_key_flag(istack: Stack) -> None:
    r = redis.Redis.from_url(istack.redis_url, decode_responses=True)
    r.hdel(INVENTORY_KEY, store_id_of(store(istack)))  # another module may have used this address
    windows = istack.host(HOST).windows_host
    with Client(istack.producer_settings()) as client:
        first, first_bytes = inventory(istack, client)
        assert first.changes is None  # no previous inventory: no baseline
        assert len(first.items or []) == COUNT
        assert all(i.der_b64 == "" for i in first.items or [])

        second, second_bytes = inventory(istack, client)
        assert items_of(second) == items_of(first)
        assert second.changes is not None
        assert (second.changes.added, second.changes.removed, second.changes.unchanged) == (0, 0, COUNT)
        assert second.changes.added_thumbprints == [] and second.changes.removed_thumbprints == []
        assert second_bytes * 3 < first_bytes, (first_bytes, second_bytes)
        # one comma-separated string (sorted), not a PSRP array of 5,000 strings
        assert last_inventory_parameters(istack)["KnownThumbprint"] == ",".join(sorted(items_of(first)))
        # the known certificates come back as ONE compact record (~12 bytes each), not one each:
        # one ~330-byte record per certificate would make it ~13 KB more than a job's fixed
        # ~9-12 KB (a new session's replies included); the first inventory's 40 full records
        # come in batches (~59 KB)
        assert second_bytes * 4 < first_bytes, (first_bytes, second_bytes)

        # on the host: one certificate added, one removed, one gets its private key
        new_der, _ = new_certificate(1000)
        new_thumb = hashlib.sha1(new_der).hexdigest().upper()
        windows.add_certificate("My", new_der)
        gone = sorted(items_of(first))[0]
        assert windows.remove_certificate("My", gone)
        keyed_der, keyed_key = new_certificate(2000)
        keyed_thumb = hashlib.sha1(keyed_der).hexdigest().upper()
        windows.add_certificate("My", keyed_der)

        third, _ = inventory(istack, client)
        assert third.changes is not None
        assert third.changes.added_thumbprints == sorted([new_thumb, keyed_thumb])
        assert third.changes.removed_thumbprints == [gone]
        assert (third.changes.added, third.changes.removed, third.changes.unchanged) == (2, 1, COUNT - 1)

        # a known certificate whose private key and friendly name arrive later is reported with
        # them (a hostile friendly name is data)
        friendly = 'Keyed "]],[0,true,"x"] $(whoami) é'
        windows.add_certificate("My", keyed_der, keyed_key, friendly)
        fourth, _ = inventory(istack, client)
        assert keyed_thumb in last_inventory_parameters(istack)["KnownThumbprint"].split(",")
        assert fourth.changes is not None and fourth.changes.unchanged == COUNT + 1
        assert items_of(fourth)[keyed_thumb]["has_private_key"] is True
        assert items_of(fourth)[keyed_thumb]["friendly_name"] == friendly
        assert not fourth.warnings
        assert items_of(third)[keyed_thumb]["has_private_key"] is False

        # every field but the DER is what a full inventory reports
        full, _ = inventory(istack, client, include_der=True)
        assert full.items is not None and all(i.der_b64 for i in full.items)
        stripped = {t: {**v, "der_b64": ""} for t, v in items_of(full).items()}
        assert items_of(fourth) == stripped


def test_state_of_another_store_or_invalid_state_means_a_full_inventory(istack: Stack) -> None:
    r = redis.Redis.from_url(istack.redis_url, decode_responses=True)
    sid = store_id_of(store(istack))
    with Client(istack.producer_settings()) as client:
        inventory(istack, client)
        # the document is for another host: no baseline, the host is asked for everything
        raw = r.hget(INVENTORY_KEY, sid)
        assert raw is not None
        r.hset(INVENTORY_KEY, sid, raw.replace('"host":"', '"host":"other-'))
        result, _ = inventory(istack, client)
        assert result.changes is None
        assert "KnownThumbprint" not in last_inventory_parameters(istack)
        # not valid JSON: ignored, a full inventory
        r.hset(INVENTORY_KEY, sid, "{not json")
        again, _ = inventory(istack, client)
        assert again.changes is None
        assert items_of(again) == items_of(result)
