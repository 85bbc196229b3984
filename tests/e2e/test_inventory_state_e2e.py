"""The inventory state end to end: a prefork worker keeps the latest inventory of each store in
Redis and follows every add and remove its jobs make; ``wincert expiring`` reads it back."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
from producer.inventory_model import InventoryReader
from producer.messages import AddJob, InventoryJob, NamedCredential, Protocol, RemoveJob, StoreRef
from tests.e2e.conftest import Stack, sha1_thumbprints_of
from tests.support import x509_vector_files

pytestmark = pytest.mark.e2e

WINCERT = str(Path(sys.executable).parent / "wincert")


def store(stack: Stack, path: str) -> StoreRef:
    host = stack.host("E2E-HTTP")
    return StoreRef(
        store_type="WinCert",  # type: ignore[arg-type]
        client_machine=host.bind,
        port=host.port,
        store_path=path,
        protocol=Protocol.HTTP,
        credential=NamedCredential(kind="named", name="e2e-http"),
    )


def new_certificate(days: int) -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "state-e2e.contoso.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(Encoding.DER)
    return der, hashlib.sha1(der).hexdigest().upper()


def expiring(stack: Stack, *args: str) -> list[dict[str, Any]]:
    env = {**os.environ, **stack.producer_env()}
    proc = subprocess.run(
        [WINCERT, "expiring", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def test_inventory_add_and_remove_keep_the_state_current(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    # the session's redis-server is shared by every e2e module and their simulated hosts all
    # listen on 127.0.0.1: forget what earlier modules recorded for this address
    r.delete("wincert:inventory")
    reader = InventoryReader(r)
    der, thumbprint = new_certificate(days=5)
    with Client(stack.producer_settings()) as client:
        inventory = client.wait(
            client.submit(InventoryJob(job_type="inventory", store=store(stack, "Root"))), 120
        )
        assert inventory.code.value == "ok", inventory.message
        root = reader.get(store(stack, "Root"))
        assert root is not None and root.last_inventory is not None
        assert root.thumbprints() == sha1_thumbprints_of(x509_vector_files())
        assert '"der' not in json.dumps(root.model_dump())

        add = AddJob(job_type="add", store=store(stack, "My"), certificate=client.certificate_data(der, None))
        added = client.wait(client.submit(add), 120)
        assert added.code.value == "ok", added.message
        my = reader.get(store(stack, "My"))
        assert my is not None and my.last_inventory is None  # known from the change alone
        [entry] = [c for c in my.certificates if c.thumbprint == thumbprint]
        assert entry.subject_cn == "state-e2e.contoso.test"
        assert 4 * 86400 < entry.not_after - datetime.now(UTC).timestamp() <= 5 * 86400
        rows = expiring(stack, "--within", "7d", "--host", stack.host("E2E-HTTP").bind)
        assert thumbprint in [r["thumbprint"] for r in rows if r["store_path"] == "My"]

        removed = client.wait(
            client.submit(RemoveJob(job_type="remove", store=store(stack, "My"), alias=thumbprint)), 120
        )
        assert removed.code.value == "ok", removed.message
        my = reader.get(store(stack, "My"))
        assert my is not None and thumbprint not in my.thumbprints()
        assert thumbprint not in [r["thumbprint"] for r in expiring(stack, "--within", "7d")]
