"""HTTPS client-certificate authentication, end to end through ``worker.jobs.run``.

A CA made here is seeded into the simulated host's ``Root`` store; the host maps certificates
with the UPN ``ops@wincert.test`` issued by that CA to its local account ``ops`` (WinRM's
ClientCertificate mapping). The worker's credential names a certificate file and an
*encrypted* key file with its passphrase; the job carries only the credential's name.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from producer.codes import ResultCode
from producer.messages import JobResult, StoreRef, parse_job
from simulator.config import ClientCertificateMappingSpec, HostConfig, SeedSpec, UserSpec
from simulator.server import SimulatedHost, Simulator
from simulator.wsman.certauth import UPN_OID
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings

PASSPHRASE = "key pass 'ö'"
UPN = "ops@wincert.test"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.ca = (
            x509.CertificateBuilder().subject_name(_name("Client CA")).issuer_name(_name("Client CA"))
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = root / "client-ca.pem"
        self.ca_file.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        self.ca_thumbprint = self.ca.fingerprint(hashes.SHA1()).hex().upper()

    def client(self, label: str, upn: str) -> tuple[Path, Path]:
        """A client certificate with ``upn`` and its key (encrypted with PASSPHRASE) as files."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        utf8 = upn.encode()
        cert = (
            x509.CertificateBuilder().subject_name(_name(label)).issuer_name(self.ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.OtherName(UPN_OID, bytes([0x0C, len(utf8)]) + utf8)]),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        cert_file, key_file = self.root / f"{label}.pem", self.root / f"{label}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        ))
        return cert_file, key_file


@pytest.fixture
def lab(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> tuple[Pki, SimulatedHost, Path]:
    pki = Pki(tmp_path)
    config = HostConfig(
        name="WIN-CERT01",
        transport="https",
        auth=["certificate", "basic"],
        users=[UserSpec(username="ops", password="unused-" + uuid.uuid4().hex)],
        seed=[SeedSpec(store="Root", path=pki.ca_file)],
        client_certificate_mappings=[
            ClientCertificateMappingSpec(subject=UPN, issuer=pki.ca_thumbprint, username="ops")
        ],
    )
    host = make_simulator([config]).hosts[0]
    mapped = pki.client("mapped", UPN)
    unmapped = pki.client("unmapped", "someone@wincert.test")
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({
        "cert-ops": {"certificate_file": str(mapped[0]), "private_key_file": str(mapped[1]),
                     "private_key_passphrase": PASSPHRASE},
        "cert-other": {"certificate_file": str(unmapped[0]), "private_key_file": str(unmapped[1]),
                       "private_key_passphrase": PASSPHRASE},
        "password-only": {"username": "ops", "password": "x"},
    }), encoding="utf-8")
    return pki, host, credentials


def _run(lab: tuple[Pki, SimulatedHost, Path], credential: str, job_type: str = "inventory",
         **fields: Any) -> JobResult:
    _, host, credentials = lab
    job = {
        "job_type": job_type, "job_id": str(uuid.uuid4()),
        "store": {"store_type": "WinCert", "client_machine": "127.0.0.1", "store_path": "Root",
                  "protocol": "https", "port": host.port, "auth": "certificate",
                  "credential": {"kind": "named", "name": credential}},
        **fields,
    }
    settings = load_settings(credentials_file=credentials)
    factory = make_session_factory(SessionOptions(ca_bundle=host.ca_bundle, session_idle_seconds=0))
    return jobs.run(parse_job(job), factory, CredentialResolver(settings)).result


def test_a_mapped_client_certificate_runs_jobs_as_the_mapped_account(
    lab: tuple[Pki, SimulatedHost, Path]
) -> None:
    pki, _, _ = lab
    result = _run(lab, "cert-ops")
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message
    assert pki.ca_thumbprint in {item.thumbprint for item in result.items or []}


def test_an_unmapped_certificate_is_auth_failed_naming_the_mapping(
    lab: tuple[Pki, SimulatedHost, Path]
) -> None:
    result = _run(lab, "cert-other")
    assert result.code == ResultCode.AUTH_FAILED, result.message
    assert "ClientCertificate" in result.message and "UPN" in result.message
    assert PASSPHRASE not in result.message


def test_a_credential_without_a_certificate_is_named(lab: tuple[Pki, SimulatedHost, Path]) -> None:
    result = _run(lab, "password-only")
    assert result.code == ResultCode.CREDENTIAL_UNAVAILABLE, result.message
    assert "certificate_file" in result.message


def test_certificate_auth_needs_https() -> None:
    with pytest.raises(ValidationError, match="needs protocol 'https'"):
        StoreRef.model_validate({"store_type": "WinCert", "client_machine": "h", "store_path": "My",
                                 "protocol": "http", "auth": "certificate"})
