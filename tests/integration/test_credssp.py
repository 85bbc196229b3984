"""CredSSP over HTTP with CredSSP message encryption, end to end through ``worker.jobs.run``.

The simulator serves ``WWW-Authenticate: CredSSP`` (pyspnego's CredSSP acceptor: TLS, inner
NTLM against the host's account, public-key binding, delegated credential); pypsrp's client is
requests-credssp. Bodies over 16 KiB travel as ``multipart/x-multi-encrypted`` in 16 KiB
parts (MS-WSMV 2.2.9.1.2.2): the library pushed on the first call and the add's PFX exceed it,
and the test counts the parts the host decrypted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, pkcs12
from cryptography.x509.oid import NameOID

from producer.codes import ResultCode
from producer.messages import JobResult, parse_job
from simulator.config import HostConfig, UserSpec
from simulator.server import SimulatedHost, Simulator
from simulator.wsman import encryption
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings

PASSWORD = "Cssp-pw 'ö' $(x)"
PFX_PASSWORD = "Pfx-Secret-42"
CREDSSP = "application/HTTP-CredSSP-session-encrypted"


@pytest.fixture
def host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    users = [UserSpec(username="ops", password=PASSWORD)]
    config = HostConfig(name="WIN-CSSP", auth=["credssp"], users=users)
    return make_simulator([config]).hosts[0]


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many CredSSP-encrypted parts each request body the host decrypted had."""
    seen: list[int] = []
    real = encryption.unwrap

    def spy(context: Any, body: bytes) -> bytes:
        seen.append(body.count(f"Content-Type: {CREDSSP}".encode()))
        return real(context, body)

    monkeypatch.setattr(encryption, "unwrap", spy)
    return seen


def _run(
    tmp_path: Path, host: SimulatedHost, job_type: str, password: str = PASSWORD, **fields: Any
) -> JobResult:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"ops": {"username": "ops", "password": password}}), encoding="utf-8")
    job = {
        "job_type": job_type,
        "job_id": str(uuid.uuid4()),
        "store": {
            "store_type": "WinCert", "client_machine": "127.0.0.1", "store_path": "My", "protocol": "http",
            "port": host.port, "auth": "credssp", "credential": {"kind": "named", "name": "ops"},
        },
        **fields,
    }
    settings = load_settings(credentials_file=credentials, allow_plaintext_secrets=True)
    factory = make_session_factory(SessionOptions(session_idle_seconds=0))
    return jobs.run(parse_job(job), factory, CredentialResolver(settings)).result


def _pfx() -> tuple[bytes, str]:
    key = rsa.generate_private_key(65537, 4096)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "credssp.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256())
    )
    encryption_ = (
        PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
        .build(PFX_PASSWORD.encode())
    )
    pfx = pkcs12.serialize_key_and_certificates(b"credssp", key, cert, None, encryption_)
    return pfx, hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()


def test_inventory_and_add_over_credssp_with_multi_part_encryption(
    tmp_path: Path, host: SimulatedHost, parts: list[int]
) -> None:
    inventory = _run(tmp_path, host, "inventory")
    assert (inventory.status.value, inventory.code) == ("success", ResultCode.OK), inventory.message
    pfx, thumbprint = _pfx()
    add = _run(
        tmp_path, host, "add",
        certificate={
            "contents_plaintext": base64.b64encode(pfx).decode(), "password_plaintext": PFX_PASSWORD
        },
    )
    assert (add.status.value, add.code) == ("success", ResultCode.OK), add.message
    assert add.thumbprint == thumbprint
    assert thumbprint in {c.thumbprint for c in host.windows_host.certificates("My")}
    assert parts and all(n >= 1 for n in parts)  # every request was CredSSP-encrypted
    assert max(parts) > 1  # and bodies over 16 KiB went in several parts


def test_a_wrong_password_is_auth_failed(tmp_path: Path, host: SimulatedHost) -> None:
    result = _run(tmp_path, host, "inventory", password="not-it")
    assert result.code == ResultCode.AUTH_FAILED, result.message
    assert "credssp" in result.message and "not-it" not in result.message
