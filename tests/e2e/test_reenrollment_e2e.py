"""Reenrollment (on-device key generation) end to end, nothing mocked.

producer.Client → Redis → ``celery worker`` subprocess → WinRM (HTTP, NTLM, message encryption)
→ simulated Windows hosts. CSRs are checked here with ``cryptography``; certificates are
signed here by a CA made with ``cryptography`` (or, for chained signing, by the worker's
``testca.sign`` task, ``WINCERT_TEST_CA_DIR``). Host state is read from the host model and
each host's journal.

Hosts (one per concern): ``ENR-CERT`` (WinCert), ``ENR-IIS`` (IIS 10, ``Default Web Site``
with ``*:443:`` bound to an initial certificate), ``ENR-SQL`` (MSSQLSERVER).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from producer.client import Client
from producer.messages import (
    AnyJob,
    JobResult,
    NamedCredential,
    ReenrollmentCompleteJob,
    ReenrollmentJob,
    StoreRef,
)
from simulator.config import HostConfig, IisBindingSpec, IisSiteSpec, IisSpec, SeedSpec, SqlInstanceSpec
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

SUBJECT = 'CN=web01.example.test, OU="", O="Contoso, Inc", L="Say ""hi""", C=US'
IIS_SITE = "Default Web Site"


class CA:
    """A CA made here, signing CSRs (copying subject and SANs)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "E2E Reenrollment CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, subject: x509.Name, public_key: Any, extensions: x509.Extensions | None = None) -> str:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        for extension in extensions or []:
            builder = builder.add_extension(extension.value, extension.critical)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()

    def sign(self, csr_pem: str) -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        return self.issue(csr.subject, csr.public_key(), csr.extensions)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(Encoding.PEM).decode()


CA_ = CA()


def thumbprint_of(pem: str) -> str:
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper()


def initial_pfx() -> tuple[bytes, str]:
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=300))
        .not_valid_after(now + dt.timedelta(days=5)).sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(Encoding.DER)
    return pkcs12.serialize_key_and_certificates(b"old", key, cert, None, NoEncryption()), hashlib.sha1(
        der
    ).hexdigest().upper()


OLD_PFX, OLD_THUMBPRINT = initial_pfx()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-reenroll"))
    (workdir / "old.pfx").write_bytes(OLD_PFX)
    hosts = [
        HostConfig(name="ENR-CERT", address="127.0.0.1", transport="http"),
        HostConfig(
            name="ENR-IIS",
            address="127.0.0.2",
            transport="http",
            os_build=20348,
            iis=IisSpec(version="10.0", sites=[
                IisSiteSpec(name=IIS_SITE, id=1, bindings=[
                    IisBindingSpec(protocol="http", binding_information="*:80:"),
                    IisBindingSpec(binding_information="*:443:", certificate_thumbprint=OLD_THUMBPRINT),
                ]),
            ]),
            seed=[SeedSpec(store="My", path=workdir / "old.pfx", password="")],
        ),
        HostConfig(name="ENR-SQL", address="127.0.0.3", transport="http",
                   sql_instances=[SqlInstanceSpec(name="MSSQLSERVER")]),
    ]
    with start_stack(workdir, redis_url, hosts, WINCERT_TEST_CA_DIR=str(workdir / "testca")) as running:
        yield running


def store(
    stack: Stack, host: str, store_type: str = "WinCert", store_path: str = "My", **extra: Any
) -> StoreRef:
    sim = stack.host(host)
    return StoreRef(
        store_type=store_type,
        client_machine=sim.bind,
        port=sim.port,
        protocol="http",
        store_path=store_path,
        credential=NamedCredential(kind="named", name=host.lower()),
        **extra,
    )


def phase1(target: StoreRef, **fields: Any) -> ReenrollmentJob:
    return ReenrollmentJob(job_type="reenrollment", store=target, **{"subject": SUBJECT, **fields})


def phase2(target: StoreRef, certificate: str, **fields: Any) -> ReenrollmentCompleteJob:
    return ReenrollmentCompleteJob(job_type="reenrollment_complete", store=target, certificate=certificate,
                                   **fields)


def run(stack: Stack, *jobs: AnyJob, timeout: float = 90) -> list[JobResult]:
    with Client(stack.producer_settings()) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=timeout) for job_id in ids]


def wait(stack: Stack, job_id: uuid.UUID, timeout: float = 90) -> JobResult:
    with Client(stack.producer_settings()) as client:
        return client.wait(job_id, timeout=timeout)


def outcome(result: JobResult) -> tuple[str, str]:
    return result.status.value, result.code.value


def csr_of(result: JobResult) -> x509.CertificateSigningRequest:
    assert result.csr is not None, result
    csr = x509.load_pem_x509_csr(result.csr.encode())
    assert csr.is_signature_valid
    return csr


def entry(stack: Stack, host: str, thumbprint: str, store_path: str = "My") -> Any:
    found = {e.thumbprint: e for e in stack.host(host).windows_host.certificates(store_path)}
    return found.get(thumbprint)


def pending(stack: Stack, host: str) -> list[str]:
    return [e.friendly_name for e in stack.host(host).windows_host.certificates("REQUEST")]


def bound_thumbprint(stack: Stack, host: str, site: str, info: str) -> str | None:
    iis = stack.host(host).windows_host.iis
    for candidate in iis.sites:
        for binding in candidate.bindings:
            if candidate.name == site and binding.is_https and binding.binding_information == info:
                mapping = iis.ssl_mappings.get(binding.endpoint)
                return None if mapping is None else mapping.certificate_hash
    return None


def calls(stack: Stack, host: str, function: str) -> list[dict[str, Any]]:
    return [params for name, params in stack.host(host).stats.journal if name == function]


# -- phase 1 ---------------------------------------------------------------------------------


def test_phase1_returns_a_csr_that_matches_the_job_and_redelivery_returns_it_again(stack: Stack) -> None:
    job = phase1(
        store(stack, "ENR-CERT"),
        key_algorithm="ECDSA_P256",
        sans=[
            {"type": "dns", "value": "web01.example.test"},
            {"type": "ip", "value": "10.1.2.3"},
            {"type": "email", "value": "ops@example.test"},
            {"type": "upn", "value": "svc@corp.example.test"},
            {"type": "uri", "value": "https://web01.example.test/?a=1&b=2"},
        ],
    )
    [result] = run(stack, job)
    assert outcome(result) == ("success", "ok"), result
    csr = csr_of(result)
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert [(a.oid, a.value) for rdn in reversed(csr.subject.rdns) for a in rdn] == [
        (NameOID.COMMON_NAME, "web01.example.test"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, ""),
        (NameOID.ORGANIZATION_NAME, "Contoso, Inc"),
        (NameOID.LOCALITY_NAME, 'Say "hi"'),
        (NameOID.COUNTRY_NAME, "US"),
    ]
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web01.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["https://web01.example.test/?a=1&b=2"]
    assert f"WinCert request {job.job_id}" in pending(stack, "ENR-CERT")
    [sent] = calls(stack, "ENR-CERT", "New-WinCertCertificateRequest")[-1:]
    assert sent["RequestId"] == str(job.job_id)
    assert sent["ProviderName"] == "Microsoft Software Key Storage Provider"
    assert sent["Subject"] == 'CN=web01.example.test, OU="", O="Contoso, Inc", L="Say ""hi""", C=US'

    # the same job id again, after the worker "forgot" it (as if it died before recording the
    # result): the host returns the same CSR and makes no second key
    redis.Redis.from_url(stack.redis_url).delete(
        f"wincert:job:{job.job_id}:result", f"celery-task-meta-{job.job_id}"
    )
    [again] = run(stack, job)
    assert outcome(again) == ("success", "ok"), again
    assert again.csr == result.csr
    assert "existing" in again.message
    assert pending(stack, "ENR-CERT").count(f"WinCert request {job.job_id}") == 1
    # and a plain duplicate delivery returns the stored result
    [third] = run(stack, job)
    assert third.csr == result.csr


def test_legacy_san_string(stack: Stack) -> None:
    job = ReenrollmentJob.model_validate({
        "job_type": "reenrollment",
        "store": store(stack, "ENR-CERT").model_dump(mode="json"),
        "subject": "CN=legacy.example.test",
        "sans": "dns=legacy.example.test&dns=www.legacy.example.test&ip=10.9.8.7",
    })
    [result] = run(stack, job)
    assert outcome(result) == ("success", "ok"), result
    san = csr_of(result).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["legacy.example.test", "www.legacy.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.9.8.7")]


def test_csp_with_ecdsa_fails_with_key_generation_failed(stack: Stack) -> None:
    job = phase1(store(stack, "ENR-CERT"), key_algorithm="ECDSA_P384",
                 provider_name="Microsoft Enhanced Cryptographic Provider v1.0")
    [result] = run(stack, job)
    assert outcome(result) == ("failure", "key_generation_failed"), result
    assert "CryptoAPI provider" in result.message
    assert f"WinCert request {job.job_id}" not in pending(stack, "ENR-CERT")


# -- phase 2 ---------------------------------------------------------------------------------


def test_wincert_install_pairs_with_the_pending_key(stack: Stack) -> None:
    target = store(stack, "ENR-CERT")
    [first] = run(stack, phase1(target, key_algorithm="RSA", key_length=3072))
    issued = CA_.sign(first.csr or "")
    job = phase2(target, issued, chain=[CA_.pem], include_chain=True, request_job_id=first.job_id)
    [result] = run(stack, job)
    assert outcome(result) == ("success", "ok"), result
    t = thumbprint_of(issued)
    assert result.thumbprint == t
    installed = entry(stack, "ENR-CERT", t)
    assert installed is not None and installed.has_private_key
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert installed.private_key.public_key().public_bytes(Encoding.DER, spki) == csr_of(first).public_key(
    ).public_bytes(Encoding.DER, spki)
    assert f"WinCert request {first.job_id}" not in pending(stack, "ENR-CERT")
    assert entry(stack, "ENR-CERT", thumbprint_of(CA_.pem), "Root") is not None
    # a second completion with the same certificate (a new job) changes nothing
    [again] = run(stack, phase2(target, issued))
    assert outcome(again) == ("success", "already_present"), again


def test_certificate_for_another_key_is_no_matching_request(stack: Stack) -> None:
    target = store(stack, "ENR-CERT")
    [first] = run(stack, phase1(target))
    stranger = CA_.issue(csr_of(first).subject, rsa.generate_private_key(65537, 2048).public_key())
    [result] = run(stack, phase2(target, stranger))
    assert outcome(result) == ("failure", "no_matching_request"), result
    assert entry(stack, "ENR-CERT", thumbprint_of(stranger)) is None
    assert f"WinCert request {first.job_id}" in pending(stack, "ENR-CERT")


def test_iisu_renewal_binds_the_new_certificate(stack: Stack) -> None:
    assert bound_thumbprint(stack, "ENR-IIS", IIS_SITE, "*:443:") == OLD_THUMBPRINT
    params = {"SiteName": IIS_SITE, "IPAddress": "*", "Port": "443", "HostName": "", "SniFlag": "0",
              "Protocol": "https"}
    target = store(stack, "ENR-IIS", "IISU", "WebHosting")
    [first] = run(stack, phase1(target, subject="CN=www.example.test", entry_parameters=params,
                                sans=[{"type": "dns", "value": "www.example.test"}]))
    assert outcome(first) == ("success", "ok"), first
    issued = CA_.sign(first.csr or "")
    [result] = run(stack, phase2(target, issued, entry_parameters=params))
    assert outcome(result) == ("success", "ok"), result
    t = thumbprint_of(issued)
    assert bound_thumbprint(stack, "ENR-IIS", IIS_SITE, "*:443:") == t
    assert entry(stack, "ENR-IIS", t, "WebHosting").has_private_key
    assert OLD_THUMBPRINT in result.message  # "it replaced <old>"


def test_iisu_binding_failure_is_a_failure_and_the_certificate_stays(stack: Stack) -> None:
    params = {"SiteName": "No Such Site", "IPAddress": "*", "Port": "8443", "HostName": "", "SniFlag": "0",
              "Protocol": "https"}
    target = store(stack, "ENR-IIS", "IISU", "My")
    [first] = run(stack, phase1(target, subject="CN=nosite.example.test", entry_parameters=params))
    issued = CA_.sign(first.csr or "")
    [result] = run(stack, phase2(target, issued, entry_parameters=params))
    assert outcome(result) == ("failure", "site_not_found"), result
    assert "stays installed" in result.message
    assert entry(stack, "ENR-IIS", thumbprint_of(issued)).has_private_key


def test_winsql_binds_and_honours_restart_service(stack: Stack) -> None:
    for restart in (False, True):
        target = store(stack, "ENR-SQL", "WinSQL", "My", restart_service=restart)
        [first] = run(stack, phase1(target, subject=f"CN=sql-{restart}.example.test"))
        issued = CA_.sign(first.csr or "")
        [result] = run(stack, phase2(target, issued, entry_parameters={"InstanceName": "MSSQLSERVER"}))
        assert outcome(result) == ("success", "ok"), result
        t = thumbprint_of(issued)
        [instance] = stack.host("ENR-SQL").windows_host.sql.instances
        assert instance.certificate.upper() == t
        last = calls(stack, "ENR-SQL", "Set-WinCertSqlCertificate")[-1]
        assert last["Thumbprint"] == t
        assert bool(last.get("RestartService")) is restart


# -- chained signing -------------------------------------------------------------------------


def test_chained_signing_with_the_test_ca(stack: Stack) -> None:
    params = {"SiteName": IIS_SITE, "IPAddress": "*", "Port": "443", "HostName": "", "SniFlag": "0",
              "Protocol": "https"}
    target = store(stack, "ENR-IIS", "IISU", "My")
    job = phase1(target, subject="CN=chained.example.test", key_algorithm="ECDSA_P256",
                 entry_parameters=params,
                 sans=[{"type": "dns", "value": "chained.example.test"}],
                 signer={"task": "testca.sign", "queue": stack.queue})
    [first] = run(stack, job)
    assert outcome(first) == ("success", "ok"), first
    completion = uuid.uuid5(job.job_id, "complete")
    assert str(completion) in first.message
    done = wait(stack, completion)
    assert outcome(done) == ("success", "ok"), done
    assert done.job_type.value == "reenrollment_complete"
    assert bound_thumbprint(stack, "ENR-IIS", IIS_SITE, "*:443:") == done.thumbprint
    installed = entry(stack, "ENR-IIS", done.thumbprint or "")
    assert installed is not None and installed.has_private_key
    cert = installed.certificate()
    assert cert.subject.rfc4514_string() == "CN=chained.example.test"
    assert "Test CA" in cert.issuer.rfc4514_string()


def test_chained_signing_failure_is_signing_failed(stack: Stack) -> None:
    job = phase1(store(stack, "ENR-CERT"), subject="CN=refused.invalid",
                 signer={"task": "testca.sign", "queue": stack.queue})
    [first] = run(stack, job)
    assert outcome(first) == ("success", "ok"), first
    done = wait(stack, uuid.uuid5(job.job_id, "complete"))
    assert outcome(done) == ("failure", "signing_failed"), done
    assert "testca.sign" in done.message and "refuses" in done.message
    assert f"WinCert request {job.job_id}" in pending(stack, "ENR-CERT")
