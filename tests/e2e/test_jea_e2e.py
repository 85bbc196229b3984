"""JEA endpoints end to end: producer → Redis → prefork worker subprocess → WinRM (HTTP, NTLM,
message encryption) → a simulated host serving the ``WinCert`` JEA endpoint.

The store property ``jea_endpoint`` makes the worker open ``…/powershell/WinCert``: inventory and
add (a password-protected PKCS#12, sealed with WINCERT_SECRET_KEYS) run there, and the
simulator's journal proves no script was ever sent, only the module's functions. An endpoint
the host does not have fails as ``winrm_fault`` naming it; a job without ``jea_endpoint`` on the
same host still loads the library over Microsoft.PowerShell.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from producer.client import Client
from producer.messages import (
    AddJob,
    AnyJob,
    CertificateData,
    InventoryJob,
    JobResult,
    NamedCredential,
    StoreRef,
)
from producer.secrets import encrypt_secret
from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

HOST = "E2E-JEA"
ENDPOINT = "WinCert"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-jea"))
    hosts = [
        HostConfig(name=HOST, address="127.0.0.1", transport="http", auth=["negotiate", "ntlm"],
                   jea_endpoints=[ENDPOINT]),
    ]
    with start_stack(workdir, redis_url, hosts) as running:
        yield running


def _store(stack: Stack, store_path: str, jea_endpoint: str | None = ENDPOINT) -> StoreRef:
    host = stack.host(HOST)
    return StoreRef(
        store_type="WinCert",
        client_machine=host.bind,
        port=host.port,
        protocol="http",
        auth="ntlm",
        store_path=store_path,
        credential=NamedCredential(kind="named", name=HOST.lower()),
        jea_endpoint=jea_endpoint,
    )


def _pfx(cn: str, password: str) -> tuple[bytes, str]:
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    data = pkcs12.serialize_key_and_certificates(
        b"jea", key, cert, None, serialization.BestAvailableEncryption(password.encode())
    )
    return data, cert.fingerprint(hashes.SHA1()).hex().upper()


def _run(stack: Stack, job: AnyJob) -> JobResult:
    with Client(stack.producer_settings()) as client:
        return client.wait(client.submit(job), timeout=90)


def _journal(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    return list(stack.host(HOST).stats.journal)


def test_inventory_and_add_through_the_jea_endpoint_send_no_script(stack: Stack) -> None:
    stack.host(HOST).stats.reset()
    password = "Jea-Pfx-Passw0rd!"
    pfx, thumbprint = _pfx("jea-e2e.example.test", password)

    before = _run(stack, InventoryJob(job_type="inventory", store=_store(stack, "My")))
    assert (before.status.value, before.code.value) == ("success", "ok"), before.message
    assert before.items == []

    add = AddJob(
        job_type="add",
        store=_store(stack, "My"),
        certificate=CertificateData(
            contents_encrypted=encrypt_secret(base64.b64encode(pfx).decode(), stack.secret_keys),
            password_encrypted=encrypt_secret(password, stack.secret_keys),
        ),
    )
    added = _run(stack, add)
    assert (added.status.value, added.code.value) == ("success", "ok"), added.message

    after = _run(stack, InventoryJob(job_type="inventory", store=_store(stack, "My")))
    assert (after.status.value, after.code.value) == ("success", "ok"), after.message
    assert after.items is not None
    assert [(i.thumbprint, i.has_private_key) for i in after.items] == [(thumbprint, True)]
    stored = stack.host(HOST).windows_host.certificates("My")
    assert [c.thumbprint for c in stored] == [thumbprint]

    journal = _journal(stack)
    names = [name for name, _ in journal]
    assert "<script>" not in names, names  # the JEA endpoint never saw script text
    assert names.count("Get-WinCertInventory") == 2
    assert "Import-WinCertCertificate" in names
    imported = next(params for name, params in journal if name == "Import-WinCertCertificate")
    assert imported["ExpectedThumbprint"] == thumbprint
    assert imported["StorePath"] == "My"
    assert set(names) <= {"Get-WinCertInventory", "Get-WinCertHostInfo", "Import-WinCertCertificate"}


def test_an_endpoint_the_host_does_not_have_is_a_winrm_fault_naming_it(stack: Stack) -> None:
    stack.host(HOST).stats.reset()
    result = _run(stack, InventoryJob(job_type="inventory", store=_store(stack, "My", "WinCertTypo")))
    assert (result.status.value, result.code.value) == ("failure", "winrm_fault"), result.message
    assert "2150858811" in result.message
    assert "JEA endpoint 'WinCertTypo' is not registered" in result.message
    assert _journal(stack) == []
    # no shell was created for it (an earlier job's pooled shell may close meanwhile: count
    # creations, not open shells)
    assert stack.host(HOST).stats.shells_created == 0


def test_the_same_host_without_jea_endpoint_loads_the_library(stack: Stack) -> None:
    stack.host(HOST).stats.reset()
    result = _run(stack, InventoryJob(job_type="inventory", store=_store(stack, "Root", None)))
    assert (result.status.value, result.code.value) == ("success", "ok"), result.message
    names = [name for name, _ in _journal(stack)]
    assert "<script>" in names and names[-1] == "Get-WinCertInventory"
