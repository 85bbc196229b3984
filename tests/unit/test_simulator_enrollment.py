"""``Enrollment.ps1`` as the simulator runs it: certreq-style key generation and pairing (no mocks).

Every CSR is checked here with ``cryptography`` (signature with its own key, subject, SANs, key
type); issued certificates are signed here by a CA made with ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from simulator.commands import REGISTRY
from simulator.config import HostConfig
from simulator.runtime import CommandError
from simulator.windows import WindowsHost
from simulator.windows.requests import TAG_PREFIX, PendingRequests
from tests.unit.test_simulator_commands import CollectingContext

NEW = "New-WinCertCertificateRequest"
INSTALL = "Install-WinCertSignedCertificate"
KSP = "Microsoft Software Key Storage Provider"
CSP = "Microsoft Enhanced Cryptographic Provider v1.0"
DER = serialization.Encoding.DER
UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


def run(host: WindowsHost, name: str, **params: Any) -> CollectingContext:
    spec = REGISTRY.get(name)
    assert spec is not None
    ctx = CollectingContext(host)
    spec.func(ctx, REGISTRY.bind(spec, list(params.items())))
    return ctx


def call(host: WindowsHost, name: str, **params: Any) -> dict[str, Any]:
    ctx = run(host, name, **params)
    assert len(ctx.outputs) == 1
    record: dict[str, Any] = json.loads(ctx.outputs[0])
    return record


def fails(host: WindowsHost, name: str, **params: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(host, name, **params)
    return info.value


def request(host: WindowsHost, request_id: str = "req-1", subject: str = "CN=web01.example.test",
            algorithm: str = "RSA", provider: str = KSP, **extra: Any) -> dict[str, Any]:
    return call(host, NEW, RequestId=request_id, Subject=subject, KeyAlgorithm=algorithm,
                ProviderName=provider, **extra)


class CA:
    """A test CA made here: signs CSRs, or certificates for arbitrary keys."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Unit Test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, subject: x509.Name, public_key: Any, sans: x509.SubjectAlternativeName | None = None
              ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def sign_csr(self, csr_pem: str) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            sans = None
        return self.issue(csr.subject, csr.public_key(), sans)


@pytest.fixture
def host(tmp_path: Path) -> WindowsHost:
    return WindowsHost.open(tmp_path / "host", HostConfig(name="win-enroll"))


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


def is_ec(key: Any) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey)


def thumb(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


# -- New-WinCertCertificateRequest -----------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "length", "check"),
    [
        ("RSA", None, lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
        ("RSA", 3072, lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 3072),
        ("ECDSA_P256", None, lambda k: is_ec(k) and k.curve.name == "secp256r1"),
        ("ECDSA_P384", None, lambda k: is_ec(k) and k.curve.name == "secp384r1"),
    ],
)
def test_csr_verifies_with_its_own_key(
    host: WindowsHost, algorithm: str, length: int | None, check: Any
) -> None:
    extra = {"KeyLength": length} if length else {}
    record = request(host, algorithm=algorithm, **extra)
    assert record["Outcome"] == "created" and record["RequestId"] == "req-1"
    csr = x509.load_pem_x509_csr(record["Csr"].encode())
    assert csr.is_signature_valid
    assert check(csr.public_key())
    assert record["Csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    # the pending key sits in REQUEST, tagged with the request id, holding the CSR's key
    [pending] = host.certificates("REQUEST")
    assert pending.friendly_name == TAG_PREFIX + "req-1" and pending.has_private_key
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pending_key = pending.certificate().public_key().public_bytes(DER, spki)
    assert pending_key == csr.public_key().public_bytes(DER, spki)
    assert host.key_info(pending.thumbprint).provider == KSP  # type: ignore[union-attr]


def test_subject_with_commas_quotes_and_empty_values_round_trips(host: WindowsHost) -> None:
    subject = 'CN=web01.example.test, OU="", O="Contoso, Inc", L="Say ""hi""", S=WA, C=US'
    csr = x509.load_pem_x509_csr(request(host, subject=subject)["Csr"].encode())
    got = [(a.oid, a.value) for rdn in reversed(csr.subject.rdns) for a in rdn]
    assert got == [
        (NameOID.COMMON_NAME, "web01.example.test"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, ""),
        (NameOID.ORGANIZATION_NAME, "Contoso, Inc"),
        (NameOID.LOCALITY_NAME, 'Say "hi"'),
        (NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        (NameOID.COUNTRY_NAME, "US"),
    ]


def test_sans_of_all_five_types(host: WindowsHost) -> None:
    record = request(
        host,
        DnsName=["web01.example.test", "a&b.example.test"],
        IpAddress=["10.1.2.3", "2001:db8::7"],
        Email=['ops"team@example.test'],
        Upn=["svc-web@corp.example.test"],
        Uri=["https://web01.example.test/path?a=1&b=2"],
    )
    csr = x509.load_pem_x509_csr(record["Csr"].encode())
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web01.example.test", "a&b.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("2001:db8::7")
    ]
    assert san.get_values_for_type(x509.RFC822Name) == ['ops"team@example.test']
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["https://web01.example.test/path?a=1&b=2"]
    [upn] = [n for n in san if isinstance(n, x509.OtherName)]
    assert upn.type_id == UPN and upn.value == b"\x0c\x19svc-web@corp.example.test"


def test_redelivery_returns_the_same_csr_and_makes_no_second_key(host: WindowsHost) -> None:
    first = request(host, algorithm="ECDSA_P256")
    again = request(host, algorithm="ECDSA_P256")
    assert again["Outcome"] == "existing"
    assert again["Csr"] == first["Csr"]
    assert len(host.certificates("REQUEST")) == 1
    other = request(host, request_id="req-2", algorithm="ECDSA_P256")
    assert other["Outcome"] == "created" and other["Csr"] != first["Csr"]
    assert len(host.certificates("REQUEST")) == 2


def test_pending_request_survives_a_restart(tmp_path: Path) -> None:
    config = HostConfig(name="win-enroll")
    host = WindowsHost.open(tmp_path / "host", config)
    first = request(host)
    key_files = list((tmp_path / "host" / "keys").iterdir())
    assert key_files and all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in key_files)
    reopened = WindowsHost.open(tmp_path / "host", config)
    assert request(reopened) == {**first, "Outcome": "existing"}


def test_stale_half_is_replaced(host: WindowsHost) -> None:
    first = request(host)
    PendingRequests(host).forget("req-1")  # the saved CSR is gone: the tagged key is stale
    second = request(host)
    assert second["Outcome"] == "created" and second["Csr"] != first["Csr"]
    assert len(host.certificates("REQUEST")) == 1


def test_csp_cannot_generate_ecdsa(host: WindowsHost) -> None:
    error = fails(host, NEW, RequestId="r", Subject="CN=x", KeyAlgorithm="ECDSA_P256", ProviderName=CSP)
    assert error.error_id == "WinCert.KeyGenerationFailed"
    assert "CryptoAPI provider" in error.message and "cannot generate a ECDSA_P256 key" in error.message
    assert host.certificates("REQUEST") == []
    # an RSA key in the same CSP is fine
    assert request(host, provider=CSP)["Outcome"] == "created"


@pytest.mark.parametrize(
    ("params", "error_id", "text"),
    [
        ({"ProviderName": "No Such"}, "WinCert.ProviderNotFound", "'No Such' is not registered"),
        ({"Subject": "CN=a\nb"}, "WinCert.KeyGenerationFailed", "control characters"),
        ({"Subject": "XX=unknown"}, "WinCert.KeyGenerationFailed", "CRYPT_E_INVALID_X500_STRING"),
        ({"Subject": 'CN="unterminated'}, "WinCert.KeyGenerationFailed", "CRYPT_E_INVALID_X500_STRING"),
        ({"KeyLength": 1024}, "WinCert.KeyGenerationFailed", "KeyLength 1024 is not supported"),
        ({"KeyAlgorithm": "ECDSA_P384", "KeyLength": 256}, "WinCert.KeyGenerationFailed", "does not fit"),
        ({"IpAddress": ["not-an-ip"]}, "WinCert.KeyGenerationFailed", "is not an IP address"),
        ({"DnsName": ["bücher.example"]}, "WinCert.KeyGenerationFailed", "not printable ASCII"),
        ({"KeyAlgorithm": "DSA"}, "ParameterArgumentValidationError", "does not belong to the set"),
        ({"RequestId": "../evil"}, "ParameterArgumentValidationError", "does not match"),
    ],
)
def test_request_errors(host: WindowsHost, params: dict[str, Any], error_id: str, text: str) -> None:
    base = {"RequestId": "r1", "Subject": "CN=x", "KeyAlgorithm": "RSA", "ProviderName": KSP}
    error = fails(host, NEW, **{**base, **params})
    assert error.error_id.split(",")[0] == error_id
    assert text in error.message
    assert host.certificates("REQUEST") == []


# -- Install-WinCertSignedCertificate ---------------------------------------------------------


@pytest.mark.parametrize("store_path", ["My", "WebHosting"])
def test_install_pairs_with_the_pending_key(host: WindowsHost, ca: CA, store_path: str) -> None:
    csr_pem = request(host, algorithm="ECDSA_P384", DnsName=["web01.example.test"])["Csr"]
    issued = ca.sign_csr(csr_pem)
    record = call(host, INSTALL, StorePath=store_path, CertificateData=issued.public_bytes(DER),
                  ChainData=[ca.cert.public_bytes(DER)])
    assert record == {"Thumbprint": thumb(issued), "Outcome": "installed", "HasPrivateKey": True,
                      "RequestId": "req-1"}
    [entry] = host.certificates(store_path)
    assert entry.thumbprint == thumb(issued) and entry.has_private_key and entry.friendly_name == ""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert entry.private_key is not None
    paired = entry.private_key.public_key().public_bytes(DER, spki)
    assert paired == issued.public_key().public_bytes(DER, spki)
    assert host.key_info(entry.thumbprint).provider == KSP  # type: ignore[union-attr]
    if store_path != "My":
        assert host.certificates("My") == []
    assert host.certificates("REQUEST") == []  # the pending request is done
    assert PendingRequests(host).saved_csr("req-1") is None
    assert [c.thumbprint for c in host.certificates("Root")] == [thumb(ca.cert)]
    # a redelivered completion changes nothing
    again = call(host, INSTALL, StorePath=store_path, CertificateData=issued.public_bytes(DER))
    assert again["Outcome"] == "already_present" and again["HasPrivateKey"] is True


def test_install_of_a_certificate_for_another_key_fails(host: WindowsHost, ca: CA) -> None:
    request(host)
    stranger = ca.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web01.example.test")]),
                        rsa.generate_private_key(65537, 2048).public_key())
    error = fails(host, INSTALL, StorePath="My", CertificateData=stranger.public_bytes(DER))
    assert error.error_id == "WinCert.NoMatchingRequest"
    assert thumb(stranger) in error.message
    assert host.certificates("My") == [] and len(host.certificates("REQUEST")) == 1


def test_install_errors(host: WindowsHost, ca: CA) -> None:
    missing = fails(host, INSTALL, StorePath="Nope", CertificateData=b"\x30\x00")
    assert missing.error_id == "WinCert.StoreNotFound"
    junk = fails(host, INSTALL, StorePath="My", CertificateData=b"junk")
    assert junk.error_id == "WinCert.PfxImportFailed"


def test_pairing_survives_a_restart(tmp_path: Path, ca: CA) -> None:
    config = HostConfig(name="win-enroll")
    csr_pem = request(WindowsHost.open(tmp_path / "host", config), algorithm="ECDSA_P256")["Csr"]
    issued = ca.sign_csr(csr_pem)
    reopened = WindowsHost.open(tmp_path / "host", config)
    record = call(reopened, INSTALL, StorePath="My", CertificateData=issued.public_bytes(DER))
    assert record["Outcome"] == "installed"
    again = WindowsHost.open(tmp_path / "host", config)
    [entry] = again.certificates("My")
    assert entry.has_private_key and again.certificates("REQUEST") == []


# -- a redelivered completion after the worker died mid-way (Install-WinCertSignedCertificate) --
#
# The intermediate states are built through the host model as certreq -accept and the move leave
# them on Windows: after the accept, the issued certificate with the pending key in My (tagged
# with the request's friendly name), the dummy gone from REQUEST, the saved CSR still there.


def _accepted_into_my(host: WindowsHost, ca: CA, request_id: str = "req-1") -> tuple[x509.Certificate, Any]:
    """The state a completion leaves when it dies right after ``certreq -accept``."""
    csr_pem = request(host, request_id=request_id, algorithm="ECDSA_P256")["Csr"]
    issued = ca.sign_csr(csr_pem)
    [pending] = host.certificates("REQUEST")
    info = host.key_info(pending.thumbprint)
    host.add_certificate("My", issued.public_bytes(DER), pending.private_key, TAG_PREFIX + request_id,
                         create_store=True, key_info=info)
    host.remove_certificate("REQUEST", pending.thumbprint)
    assert PendingRequests(host).saved_csr(request_id) is not None
    return issued, pending.private_key


def _assert_installed_once(host: WindowsHost, issued: x509.Certificate, store_path: str) -> None:
    [entry] = host.certificates(store_path)
    assert entry.thumbprint == thumb(issued) and entry.has_private_key and entry.friendly_name == ""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert entry.private_key is not None
    paired = entry.private_key.public_key().public_bytes(DER, spki)
    assert paired == issued.public_key().public_bytes(DER, spki)
    assert host.key_info(entry.thumbprint).provider == KSP  # type: ignore[union-attr]
    assert host.certificates("My") == []  # no stranded or duplicate copy
    assert host.certificates("REQUEST") == []
    assert PendingRequests(host).saved_csr("req-1") is None


def test_redelivery_after_accept_before_move_finishes_the_move(host: WindowsHost, ca: CA) -> None:
    issued, _ = _accepted_into_my(host, ca)
    host.create_store("WebHosting")
    record = call(host, INSTALL, StorePath="WebHosting", CertificateData=issued.public_bytes(DER),
                  ChainData=[ca.cert.public_bytes(DER)])
    # this call put it into the store path: installed (not already_present), request id from the tag
    assert record == {"Thumbprint": thumb(issued), "Outcome": "installed", "HasPrivateKey": True,
                      "RequestId": "req-1"}
    _assert_installed_once(host, issued, "WebHosting")
    again = call(host, INSTALL, StorePath="WebHosting", CertificateData=issued.public_bytes(DER))
    assert again == {"Thumbprint": thumb(issued), "Outcome": "already_present", "HasPrivateKey": True,
                     "RequestId": None}
    _assert_installed_once(host, issued, "WebHosting")


def test_redelivery_after_add_before_my_remove_drops_the_duplicate(host: WindowsHost, ca: CA) -> None:
    issued, key = _accepted_into_my(host, ca)
    info = host.key_info(thumb(issued))
    # the move's Add ran (X509Store.Add copies the tag too), My's Remove did not
    host.add_certificate("WebHosting", issued.public_bytes(DER), key, TAG_PREFIX + "req-1", create_store=True,
                         key_info=info)
    record = call(host, INSTALL, StorePath="WebHosting", CertificateData=issued.public_bytes(DER))
    # the store already had it with its key: already_present; the leftover's request id is reported
    assert record == {"Thumbprint": thumb(issued), "Outcome": "already_present", "HasPrivateKey": True,
                      "RequestId": "req-1"}
    _assert_installed_once(host, issued, "WebHosting")


def test_my_copy_is_kept_when_the_store_path_is_my(host: WindowsHost, ca: CA) -> None:
    issued, _ = _accepted_into_my(host, ca)
    record = call(host, INSTALL, StorePath="my", CertificateData=issued.public_bytes(DER))
    assert record["Outcome"] == "already_present" and record["RequestId"] is None
    [entry] = host.certificates("My")
    assert entry.thumbprint == thumb(issued) and entry.has_private_key


def test_a_keyless_copy_in_my_is_not_taken_for_an_accepted_one(host: WindowsHost, ca: CA) -> None:
    issued = ca.sign_csr(request(host)["Csr"])
    host.add_certificate("My", issued.public_bytes(DER), create_store=True)  # no key: accept as before
    host.create_store("WebHosting")
    record = call(host, INSTALL, StorePath="WebHosting", CertificateData=issued.public_bytes(DER))
    assert record["Outcome"] == "installed" and record["RequestId"] == "req-1"
    [entry] = host.certificates("WebHosting")
    assert entry.has_private_key and host.certificates("REQUEST") == []


def test_an_untagged_copy_in_my_is_never_removed(host: WindowsHost, ca: CA) -> None:
    issued, key = _accepted_into_my(host, ca)
    info = host.key_info(thumb(issued))
    # somebody's own copy in My (no request tag) next to a finished install in WebHosting
    host.remove_certificate("My", thumb(issued))
    host.add_certificate("My", issued.public_bytes(DER), key, "", key_info=info)
    assert [e.friendly_name for e in host.certificates("My")] == [""]
    host.add_certificate("WebHosting", issued.public_bytes(DER), key, "", create_store=True, key_info=info)
    record = call(host, INSTALL, StorePath="WebHosting", CertificateData=issued.public_bytes(DER))
    assert record["Outcome"] == "already_present"
    assert [e.thumbprint for e in host.certificates("My")] == [thumb(issued)]  # kept


def test_subject_with_percent_round_trips(host: WindowsHost, ca: CA) -> None:
    # the PowerShell writes it to the INF as %% (INF files substitute %key%); the CSR holds one %
    subject = 'CN=100%.example.test, O="50% off %TEMP% Inc", OU=%%'
    csr = x509.load_pem_x509_csr(request(host, subject=subject)["Csr"].encode())
    got = [(a.oid, a.value) for rdn in reversed(csr.subject.rdns) for a in rdn]
    assert got == [
        (NameOID.COMMON_NAME, "100%.example.test"),
        (NameOID.ORGANIZATION_NAME, "50% off %TEMP% Inc"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "%%"),
    ]
    issued = ca.sign_csr(request(host, subject=subject)["Csr"])
    record = call(host, INSTALL, StorePath="My", CertificateData=issued.public_bytes(DER))
    assert record["Outcome"] == "installed"
    [entry] = host.certificates("My")
    assert entry.certificate().subject == csr.subject
