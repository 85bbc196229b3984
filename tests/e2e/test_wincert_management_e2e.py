"""WinCert Management Add / Remove end to end: ``producer.Client`` → Redis → ``celery worker``
subprocess → WinRM (HTTP, NTLM, message encryption) → simulated Windows hosts.

Hosts: ``WC-2022`` (build 20348) and ``WC-2016`` (build 14393) take the imports; ``WC-QUIET``
receives only jobs the worker must refuse before contacting anything, and the test proves that
no request at all reached it. Expected thumbprints are computed here with ``cryptography`` and
``hashlib`` only (never with ``producer.certinput``); what arrived on a host is read from the
simulator's host model and its journal of calls.

Every test submits its jobs at once and then waits, so the four worker processes run them in
parallel. Each test writes into its own store names (hosts are configured with them).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cryptography_vectors
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    pkcs7,
    pkcs12,
)
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from producer import Client
from producer.messages import (
    AddJob,
    JobResult,
    NamedCredential,
    RemoveJob,
    StoreRef,
)
from producer.settings import ProducerSettings
from simulator.config import DEFAULT_STORES, HostConfig
from simulator.windows.host import WindowsHost
from tests.e2e.conftest import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:PKCS#12 bundle could not be parsed")]

HOST_2022 = "WC-2022"
HOST_2016 = "WC-2016"
HOST_QUIET = "WC-QUIET"
IMPORT = "Import-WinCertCertificate"
REMOVE = "Remove-WinCertCertificate"
HOST_INFO = "Get-WinCertHostInfo"
WAIT_SECONDS = 240.0

# --- the cryptography-vectors PKCS#12 table -----------------------------------------------------
VECTOR_DIR = Path(cryptography_vectors.__path__[0]) / "pkcs12"
WITH_KEY = "added-with-key"
WITHOUT_KEY = "added-without-key"
AES_ON_OLD_HOST = "pfx_algorithm_unsupported_by_host"


class Vector(NamedTuple):
    password: str | None  # None = "no password" (no password field in the job)
    outcome: str  # WITH_KEY, WITHOUT_KEY or the exact failure code (on every host)
    aes: bool = False  # PBES2/AES: refused on Server 2016 unless rewrap_legacy_pfx


# Passwords as found by trying None, "", "cryptography" and "password" (the *-no-pwd files are
# MACed with no password, java-truststore.p12 with the empty password).
_NO_PWD_KEY = Vector(None, WITH_KEY)
_PWD_KEY = Vector("password", WITH_KEY)
_NO_PWD_NO_KEY = Vector(None, "ambiguous_leaf")  # two unrelated certificates, no key
_PWD_NO_KEY = Vector("password", "ambiguous_leaf")

VECTORS: dict[str, Vector] = {
    "cert-aes256cbc-no-key.p12": Vector("cryptography", WITHOUT_KEY, aes=True),
    "cert-key-aes256cbc.p12": Vector("cryptography", WITH_KEY, aes=True),
    "cert-none-key-none.p12": Vector("cryptography", WITH_KEY),
    "cert-rc2-key-3des.p12": Vector("cryptography", WITH_KEY),
    "java-truststore.p12": Vector("", "ambiguous_leaf"),  # a trust store: two CA certificates
    "name-1-no-pwd.p12": _NO_PWD_KEY,
    "name-1-pwd.p12": _PWD_KEY,
    "name-2-3-no-pwd.p12": _NO_PWD_KEY,
    "name-2-3-pwd.p12": _PWD_KEY,
    "name-2-no-pwd.p12": _NO_PWD_KEY,
    "name-2-pwd.p12": _PWD_KEY,
    "name-3-no-pwd.p12": _NO_PWD_KEY,
    "name-3-pwd.p12": _PWD_KEY,
    "name-all-no-pwd.p12": _NO_PWD_KEY,
    "name-all-pwd.p12": _PWD_KEY,
    "name-unicode-no-pwd.p12": _NO_PWD_KEY,
    "name-unicode-pwd.p12": _PWD_KEY,
    "no-cert-key-aes256cbc.p12": Vector("cryptography", "pfx_key_without_certificate", aes=True),
    "no-cert-name-2-no-pwd.p12": _NO_PWD_NO_KEY,
    "no-cert-name-2-pwd.p12": _PWD_NO_KEY,
    "no-cert-name-3-no-pwd.p12": _NO_PWD_NO_KEY,
    "no-cert-name-3-pwd.p12": _PWD_NO_KEY,
    "no-cert-name-all-no-pwd.p12": _NO_PWD_NO_KEY,
    "no-cert-name-all-pwd.p12": _PWD_NO_KEY,
    "no-cert-name-unicode-no-pwd.p12": _NO_PWD_NO_KEY,
    "no-cert-name-unicode-pwd.p12": _PWD_NO_KEY,
    "no-cert-no-name-no-pwd.p12": _NO_PWD_NO_KEY,
    "no-cert-no-name-pwd.p12": _PWD_NO_KEY,
    "no-name-no-pwd.p12": _NO_PWD_KEY,
    "no-name-pwd.p12": _PWD_KEY,
    "no-password.p12": Vector(None, WITH_KEY),
}


def vector_files() -> list[str]:
    """Every PKCS#12 file shipped in cryptography-vectors ``pkcs12/`` (recursively)."""
    return sorted(
        str(p.relative_to(VECTOR_DIR)) for p in VECTOR_DIR.rglob("*") if p.suffix.lower() in (".p12", ".pfx")
    )


def outcome_on(name: str, os_build: int, rewrap: bool = False) -> str:
    vector = VECTORS[name]
    # cert-only input is sent to the host as DER, so only key-bearing AES files hit the old host's limit
    if vector.aes and os_build < 17763 and not rewrap and vector.outcome == WITH_KEY:
        return AES_ON_OLD_HOST
    return vector.outcome


# --- independent helpers (cryptography + hashlib, never producer.certinput) ------------------------
def sha1(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def spki(obj: Any) -> bytes:
    return bytes(obj.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def vector_thumbprint(name: str) -> str:
    """The leaf of a vector: the certificate whose public key matches the private key (or the
    only certificate), by cryptography's own PKCS#12 loader."""
    password = VECTORS[name].password
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = pkcs12.load_pkcs12(
            (VECTOR_DIR / name).read_bytes(), None if password is None else password.encode()
        )
    certs = ([loaded.cert.certificate] if loaded.cert else []) + [
        c.certificate for c in loaded.additional_certs
    ]
    ders = list(dict.fromkeys(der_of(c) for c in certs))
    if loaded.key is not None:
        ders = [d for d in ders if spki(x509.load_der_x509_certificate(d)) == spki(loaded.key)]
    assert len(ders) == 1, name
    return sha1(ders[0])


NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    ca: bool,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


class Chain(NamedTuple):
    root: x509.Certificate
    inter: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    other: x509.Certificate
    other_key: ec.EllipticCurvePrivateKey


def make_chain(tag: str) -> Chain:
    root_key, inter_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = make_cert(f"E2E Root {tag}", root_key, f"E2E Root {tag}", root_key, True)
    inter = make_cert(f"E2E Intermediate {tag}", inter_key, f"E2E Root {tag}", root_key, True)
    leaf = make_cert(f"leaf-{tag}.example.com", leaf_key, f"E2E Intermediate {tag}", inter_key, False)
    other = make_cert(f"other-{tag}.example.com", other_key, f"E2E Intermediate {tag}", inter_key, False)
    return Chain(root, inter, leaf, leaf_key, other, other_key)


def pfx(
    chain: Chain,
    password: str | None,
    *,
    cas: Sequence[x509.Certificate] = (),
    rounds: int = 2048,
    aes: bool = False,
) -> bytes:
    """A PKCS#12 of the leaf and its key, written by cryptography. ``password`` None: no
    encryption (cryptography MACs that with the *empty* password)."""
    if password is None:
        encryption: Any = NoEncryption()
    else:
        builder = PrivateFormat.PKCS12.encryption_builder().kdf_rounds(rounds)
        if aes:
            builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(
                hashes.SHA256()
            )
        else:
            builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
                hashes.SHA1()
            )
        encryption = builder.build(password.encode("utf-8"))
    return pkcs12.serialize_key_and_certificates(
        b"e2e", chain.leaf_key, chain.leaf, list(cas) or None, encryption
    )


# A minimal DER encoder for PKCS#12 layouts cryptography will not write (bag order, duplicate
# bags, two keys): unencrypted bags, no MAC (MacData is optional in RFC 7292).
def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _explicit0(inner: bytes) -> bytes:
    return _tlv(0xA0, inner)


def key_bag(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    return _seq(_oid("1.2.840.113549.1.12.10.1.1"), _explicit0(pkcs8))


def cert_bag(cert: x509.Certificate) -> bytes:
    value = _seq(_oid("1.2.840.113549.1.9.22.1"), _explicit0(_tlv(0x04, der_of(cert))))
    return _seq(_oid("1.2.840.113549.1.12.10.1.3"), _explicit0(value))


def raw_pfx(*bags: bytes) -> bytes:
    data = _seq(_oid("1.2.840.113549.1.7.1"), _explicit0(_tlv(0x04, _seq(*bags))))
    return _seq(_tlv(0x02, b"\x03"), _seq(_oid("1.2.840.113549.1.7.1"), _explicit0(_tlv(0x04, _seq(data)))))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrapped(text: str, width: int = 64, eol: str = "\r\n") -> str:
    return eol.join(text[i : i + width] for i in range(0, len(text), width)) + eol


# --- the stack -----------------------------------------------------------------------------------
def vector_store(name: str) -> str:
    return f"V {name}"


def rewrap_store(name: str) -> str:
    return f"R {name}"


CASE_STORES = [
    *(f"ENC {i:02d}" for i in range(24)),
    "CHAIN-DEFAULT",
    "CHAIN-INCLUDED",
    "PKCS7",
    "CERT-ONLY",
    "CERT-ONLY-PEM",
    "PFX-NOKEY",
    "LEAF-ORDER",
    "DUPLICATES",
    "PWD-EMPTY",
    "PWD-NONE",
    "PWD-UNICODE",
    "PROV-KSP",
    "PROV-CASE",
    "PROV-UNKNOWN",
    "PROV-CSP-EC",
    "EXPORT-NO",
    "EXPORT-YES",
    "IDEM",
    "IDEM-NOKEY",
    *(f"RM {i}" for i in range(5)),
]


@pytest.fixture(scope="module")
def wstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    names = vector_files()
    stores_2022 = [*DEFAULT_STORES, *(vector_store(n) for n in names), *CASE_STORES]
    stores_2016 = [*DEFAULT_STORES, *(vector_store(n) for n in names), *(rewrap_store(n) for n in names)]
    hosts = [
        HostConfig(
            name=HOST_2022, address="127.0.0.31", transport="http", os_build=20348, stores=stores_2022
        ),
        HostConfig(
            name=HOST_2016, address="127.0.0.32", transport="http", os_build=14393, stores=stores_2016
        ),
        HostConfig(name=HOST_QUIET, address="127.0.0.33", transport="http", os_build=20348),
    ]
    workdir = Path(tmp_path_factory.mktemp("wincert-e2e"))
    with start_stack(workdir, redis_url, hosts, WINCERT_HOST_LIMIT="4") as running:
        yield running


@pytest.fixture(scope="module")
def client(wstack: Stack) -> Iterator[Client]:
    settings = ProducerSettings(
        broker_url=wstack.redis_url, queue=wstack.queue, secret_keys=SecretStr(wstack.secret_keys)
    )
    with Client(settings) as producer:
        yield producer


def store_ref(
    stack: Stack, host: str, store_path: str, store_type: str = "WinCert", **extra: Any
) -> StoreRef:
    sim = stack.host(host)
    return StoreRef(
        store_type=store_type,  # type: ignore[arg-type]
        client_machine=sim.bind,
        port=sim.port,
        protocol="http",  # type: ignore[arg-type]
        credential=NamedCredential(kind="named", name=host.lower()),
        store_path=store_path,
        **extra,
    )


def add_job(
    client: Client,
    stack: Stack,
    host: str,
    store_path: str,
    contents: bytes | str,
    password: str | None,
    **options: Any,
) -> AddJob:
    """An Add job sealed by the producer client (bytes travel as base64 of the file)."""
    return AddJob(
        job_type="add",
        store=store_ref(stack, host, store_path),
        certificate=client.certificate_data(contents, password),
        **options,
    )


def remove_job(stack: Stack, host: str, store_path: str, alias: str) -> RemoveJob:
    return RemoveJob(job_type="remove", store=store_ref(stack, host, store_path), alias=alias)


def run_all(client: Client, jobs: Sequence[AddJob | RemoveJob]) -> list[JobResult]:
    """Submit every job, then wait for each result (they run in parallel on the worker)."""
    ids = [client.submit(job) for job in jobs]
    return [client.wait(job_id, timeout=WAIT_SECONDS) for job_id in ids]


def calls(stack: Stack, host: str, function: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The host's journal without library loads (optionally one function only)."""
    return [
        (name, params)
        for name, params in list(stack.host(host).stats.journal)
        if name != "<script>" and (function is None or name == function)
    ]


def imports_into(stack: Stack, host: str, store_path: str) -> list[dict[str, Any]]:
    return [p for _, p in calls(stack, host, IMPORT) if p["StorePath"] == store_path]


def in_store(stack: Stack, host: str, store_path: str) -> dict[str, bool]:
    """Thumbprint → has private key, as the simulated host's store holds them."""
    return {c.thumbprint: c.has_private_key for c in stack.host(host).windows_host.certificates(store_path)}


def assert_ok(result: JobResult, code: str = "ok") -> None:
    assert (result.status.value, result.code.value) == ("success", code), result.message


def assert_failed(result: JobResult, code: str) -> None:
    assert (result.status.value, result.code.value) == ("failure", code), result.message
    assert result.thumbprint is None or len(result.thumbprint) == 40


# --- every PKCS#12 file of cryptography-vectors --------------------------------------------------
def test_every_vector_file_has_an_expected_outcome() -> None:
    files = vector_files()
    assert len(files) >= 31, files
    assert sorted(VECTORS) == files


@pytest.fixture(scope="module")
def vector_results(wstack: Stack, client: Client) -> dict[tuple[str, str, bool], JobResult]:
    """Every vector added to Server 2022 and Server 2016 (each into its own store), and every
    AES vector to Server 2016 with rewrap_legacy_pfx — all submitted at once."""
    plan: list[tuple[str, str, bool]] = [
        (h, n, False) for h in (HOST_2022, HOST_2016) for n in vector_files()
    ]
    plan += [(HOST_2016, n, True) for n in vector_files() if VECTORS[n].aes]
    jobs = [
        add_job(
            client,
            wstack,
            host,
            rewrap_store(name) if rewrap else vector_store(name),
            (VECTOR_DIR / name).read_bytes(),
            VECTORS[name].password,
            rewrap_legacy_pfx=rewrap,
        )
        for host, name, rewrap in plan
    ]
    return dict(zip(plan, run_all(client, jobs), strict=True))


@pytest.mark.parametrize("host", [HOST_2022, HOST_2016])
def test_vectors_table_through_the_real_path(
    wstack: Stack, vector_results: dict[tuple[str, str, bool], JobResult], host: str
) -> None:
    os_build = 20348 if host == HOST_2022 else 14393
    problems: list[str] = []
    for name in vector_files():
        result = vector_results[(host, name, False)]
        expected = outcome_on(name, os_build)
        store = vector_store(name)
        held = in_store(wstack, host, store)
        sent = imports_into(wstack, host, store)
        if expected in (WITH_KEY, WITHOUT_KEY):
            thumbprint = vector_thumbprint(name)
            want_key = expected == WITH_KEY
            got = (result.status.value, result.code.value, result.thumbprint, held)
            if got != ("success", "ok", thumbprint, {thumbprint: want_key}):
                problems.append(f"{name}: expected {expected} {thumbprint}, got {got} ({result.message})")
                continue
            assert len(sent) == 1, name
            assert sent[0]["ExpectedThumbprint"] == thumbprint
            # the password travels only with a key; "no password" is no Password parameter
            password = VECTORS[name].password if want_key else None
            assert sent[0].get("Password") == password and ("Password" in sent[0]) is (password is not None)
            assert (
                "ProviderName" not in sent[0] and "Exportable" not in sent[0] and "Overwrite" not in sent[0]
            )
            if not want_key:  # cert-only: the certificate's DER is sent, never the PKCS#12
                assert sha1(bytes(sent[0]["CertificateData"])) == thumbprint
            else:
                key_info = wstack.host(host).windows_host.key_info(thumbprint)
                assert key_info is not None and key_info.exportable is False
        else:
            got = (result.status.value, result.code.value, held, len(sent))
            if got != ("failure", expected, {}, 0):
                problems.append(f"{name}: expected failure {expected}, got {got} ({result.message})")
    assert not problems, "\n".join(problems)
    # chain certificates are ignored by default
    assert not [p for _, p in calls(wstack, host, IMPORT) if p["StorePath"] in ("CA", "Root")]


def test_aes_vectors_on_server_2016_name_algorithm_and_os(
    wstack: Stack, vector_results: dict[tuple[str, str, bool], JobResult]
) -> None:
    refused = [n for n in vector_files() if outcome_on(n, 14393) == AES_ON_OLD_HOST]
    assert refused == ["cert-key-aes256cbc.p12"]
    for name in refused:
        message = vector_results[(HOST_2016, name, False)].message
        assert "AES-256-CBC" in message and "PBES2" in message, message
        assert "Windows Server 2016" in message and "14393" in message, message


def test_aes_vectors_rewrapped_for_server_2016(
    wstack: Stack, vector_results: dict[tuple[str, str, bool], JobResult]
) -> None:
    for name in (n for n in vector_files() if VECTORS[n].aes):
        result = vector_results[(HOST_2016, name, True)]
        store = rewrap_store(name)
        expected = outcome_on(name, 14393, rewrap=True)
        if expected not in (WITH_KEY, WITHOUT_KEY):
            assert_failed(result, expected)
            assert in_store(wstack, HOST_2016, store) == {}
            continue
        thumbprint = vector_thumbprint(name)
        assert_ok(result)
        assert result.thumbprint == thumbprint
        assert in_store(wstack, HOST_2016, store) == {thumbprint: expected == WITH_KEY}
        (sent,) = imports_into(wstack, HOST_2016, store)
        assert bytes(sent["CertificateData"]) != (VECTOR_DIR / name).read_bytes()
        if expected == WITH_KEY:  # the re-wrapped file is 3DES/SHA1, under the same password
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = pkcs12.load_pkcs12(bytes(sent["CertificateData"]), b"cryptography")
            assert loaded.cert is not None and sha1(der_of(loaded.cert.certificate)) == thumbprint
            assert b"\x2a\x86\x48\x86\xf7\x0d\x01\x05\x0d" not in bytes(
                sent["CertificateData"]
            )  # no PBES2 OID


# --- input encodings -----------------------------------------------------------------------------
ENC_CHAIN = make_chain("enc")
ENC_DER = der_of(ENC_CHAIN.leaf)
ENC_PEM = ENC_CHAIN.leaf.public_bytes(Encoding.PEM).decode("ascii")
ENC_PFX = pfx(ENC_CHAIN, "enc-Pässwort")
ENC_PFX_B64 = b64(ENC_PFX)

# (id, contents as sent: str = the text itself, bytes = the file's bytes (sent as base64), key?)
ENCODINGS: list[tuple[str, bytes | str, bool]] = [
    ("der-raw-file", ENC_DER, False),
    ("der-base64", b64(ENC_DER), False),
    ("der-base64-crlf", wrapped(b64(ENC_DER)), False),
    ("der-base64-whitespace", "  " + wrapped(b64(ENC_DER), 76, "\n\t "), False),
    ("pem-text", ENC_PEM, False),
    ("pem-text-crlf", ENC_PEM.replace("\n", "\r\n"), False),
    ("pem-text-bom", "\ufeff" + ENC_PEM, False),
    ("pem-file", ENC_PEM.encode("ascii"), False),
    ("pem-file-crlf", ENC_PEM.replace("\n", "\r\n").encode("ascii"), False),
    ("base64-text-bom", "\ufeff" + wrapped(b64(ENC_DER)), False),
    ("pfx-raw-file", ENC_PFX, True),
    ("pfx-base64-crlf", wrapped(ENC_PFX_B64), True),
    ("pfx-base64-whitespace", " \t" + wrapped(ENC_PFX_B64, 60, "\n  "), True),
    (
        "pfx-pem-armour",
        "-----BEGIN PKCS12-----\n" + wrapped(ENC_PFX_B64, 64, "\n") + "-----END PKCS12-----\n",
        True,
    ),
    ("pfx-base64-text-bom", "\ufeff" + ENC_PFX_B64, True),
]
# Files whose bytes are text with a BOM or in UTF-16: Client.certificate_data sends them, like
# every file, as base64 of the bytes; the worker decodes that text too.
TEXT_FILE_ENCODINGS: list[tuple[str, bytes | str, bool]] = [
    ("pem-file-utf8-bom", b"\xef\xbb\xbf" + ENC_PEM.encode("ascii"), False),
    ("pem-file-utf16le-bom", b"\xff\xfe" + ENC_PEM.encode("utf-16-le"), False),
    ("pem-file-utf16be-bom", b"\xfe\xff" + ENC_PEM.encode("utf-16-be"), False),
    ("pem-file-utf16le-no-bom", ENC_PEM.encode("utf-16-le"), False),
    ("base64-file-crlf", wrapped(b64(ENC_DER)).encode("ascii"), False),
    ("pfx-base64-file-utf16le-bom", b"\xff\xfe" + wrapped(ENC_PFX_B64).encode("utf-16-le"), True),
    ("pfx-base64-file-utf8-bom", b"\xef\xbb\xbf" + ENC_PFX_B64.encode("ascii"), True),
]


def _encoding_store(index: int) -> str:
    return f"ENC {index:02d}"


def _run_encodings(
    wstack: Stack, client: Client, cases: list[tuple[str, bytes | str, bool]], first_store: int
) -> list[tuple[str, JobResult, str, bool]]:
    jobs = [
        add_job(client, wstack, HOST_2022, _encoding_store(first_store + i), contents, "enc-Pässwort")
        for i, (_, contents, _) in enumerate(cases)
    ]
    results = run_all(client, jobs)
    return [
        (case_id, result, _encoding_store(first_store + i), key)
        for i, ((case_id, _, key), result) in enumerate(zip(cases, results, strict=True))
    ]


def _check_encodings(wstack: Stack, outcomes: list[tuple[str, JobResult, str, bool]]) -> list[str]:
    leaf = sha1(ENC_DER)
    problems = []
    for case_id, result, store, key in outcomes:
        held = in_store(wstack, HOST_2022, store)
        got = (result.status.value, result.code.value, result.thumbprint, held)
        if got != ("success", "ok", leaf, {leaf: key}):
            problems.append(f"{case_id}: {got} {result.message}")
    return problems


def test_every_encoding_decodes_to_the_same_certificate(wstack: Stack, client: Client) -> None:
    outcomes = _run_encodings(wstack, client, ENCODINGS, 0)
    assert not _check_encodings(wstack, outcomes)
    # the cert-only variants all sent the same DER bytes, the PKCS#12 variants the same PKCS#12
    sent = {
        bytes(p["CertificateData"])
        for _, p in calls(wstack, HOST_2022, IMPORT)
        if p["StorePath"].startswith("ENC")
    }
    assert sent == {ENC_DER, ENC_PFX}


def test_text_files_with_bom_or_utf16_decode_to_the_same_certificate(wstack: Stack, client: Client) -> None:
    outcomes = _run_encodings(wstack, client, TEXT_FILE_ENCODINGS, len(ENCODINGS))
    problems = _check_encodings(wstack, outcomes)
    assert not problems, "\n".join(problems)


# --- refused on the worker: nothing reaches the host ---------------------------------------------
def test_refused_inputs_never_reach_the_host(wstack: Stack, client: Client) -> None:
    chain = make_chain("quiet")
    name_no_pwd = (VECTOR_DIR / "name-1-no-pwd.p12").read_bytes()
    many_rounds = pfx(chain, "rounds", rounds=600_001)
    cases: list[tuple[str, bytes | str, str | None, str, tuple[str, ...]]] = [
        ("wrong password", pfx(chain, "right-password"), "wrong-password", "pfx_password_incorrect", ()),
        ("wrong password (AES)", pfx(chain, "right", aes=True), "Right", "pfx_password_incorrect", ()),
        ("empty for no-password file", name_no_pwd, "", "pfx_password_incorrect", ("send none",)),
        ("none for empty-password file", pfx(chain, None), None, "pfx_password_incorrect", ('send ""',)),
        ("password for no-password file", name_no_pwd, "Sesame-42", "pfx_password_incorrect", ()),
        ("iterations", many_rounds, "rounds", "pfx_iterations_exceed_windows_limit", ("600001", "600000")),
        (
            "two keys",
            raw_pfx(
                key_bag(chain.leaf_key), cert_bag(chain.leaf), key_bag(chain.other_key), cert_bag(chain.other)
            ),
            None,
            "pfx_multiple_keys",
            ("2 different private keys",),
        ),
        (
            "key of no certificate",
            raw_pfx(key_bag(chain.other_key), cert_bag(chain.leaf), cert_bag(chain.inter)),
            None,
            "pfx_key_without_certificate",
            ("matches none",),
        ),
        (
            "two end-entity certificates, no key",
            raw_pfx(cert_bag(chain.leaf), cert_bag(chain.other), cert_bag(chain.inter)),
            None,
            "ambiguous_leaf",
            ("leaf-quiet.example.com", "other-quiet.example.com"),
        ),
        (
            "text",
            "Hello, world! This is not a certificate.",
            None,
            "invalid_certificate_data",
            ("starts with 'Hello, world! Th'",),
        ),
        (
            "gif file",
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
            None,
            "invalid_certificate_data",
            ("starts with bytes 47 49 46 38 39 61",),
        ),
        (
            "zip file",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
            None,
            "invalid_certificate_data",
            ("starts with bytes 50 4b 03 04",),
        ),
        (
            "truncated DER",
            der_of(chain.leaf)[:100],
            None,
            "invalid_certificate_data",
            ("looks like DER but is truncated: 100 of",),
        ),
        ("broken PEM", "-----BEGIN CERTIFICATE-----\nMIIB\n", None, "invalid_certificate_data", ("PEM",)),
        (
            "PEM private key only",
            chain.leaf_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
            None,
            "pfx_key_without_certificate",
            (),
        ),
        (
            "CSR",
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name("csr"))
            .sign(chain.leaf_key, hashes.SHA256())
            .public_bytes(Encoding.DER),
            None,
            "unsupported_certificate_format",
            ("signing request",),
        ),
    ]
    sim = wstack.host(HOST_QUIET)
    jobs = [
        add_job(client, wstack, HOST_QUIET, "My", contents, password) for _, contents, password, _, _ in cases
    ]
    results = run_all(client, jobs)
    problems = []
    for (what, _, password, code, words), result in zip(cases, results, strict=True):
        if (result.status.value, result.code.value) != ("failure", code):
            problems.append(f"{what}: {result.code.value} {result.message}")
        problems += [
            f"{what}: {word!r} not in {result.message!r}" for word in words if word not in result.message
        ]
        if password and password in result.message:
            problems.append(f"{what}: the password is in the message")
    assert not problems, "\n".join(problems)
    # no WinRM request at all reached the host: no session, no library load, no import
    assert sim.stats.requests_total == 0
    assert sim.stats.pipelines_total == 0
    assert list(sim.stats.journal) == []
    assert in_store(wstack, HOST_QUIET, "My") == {}


# --- leaf selection, duplicates, chain -----------------------------------------------------------
def test_leaf_is_the_key_certificate_and_duplicate_bags_collapse(wstack: Stack, client: Client) -> None:
    chain = make_chain("order")
    leaf = sha1(der_of(chain.leaf))
    cases = [
        (
            "LEAF-ORDER",
            raw_pfx(
                cert_bag(chain.root), cert_bag(chain.inter), key_bag(chain.leaf_key), cert_bag(chain.leaf)
            ),
        ),
        (
            "DUPLICATES",
            raw_pfx(
                cert_bag(chain.root),
                key_bag(chain.leaf_key),
                cert_bag(chain.leaf),
                cert_bag(chain.inter),
                key_bag(chain.leaf_key),
                cert_bag(chain.leaf),
                cert_bag(chain.root),
            ),
        ),
    ]
    results = run_all(
        client, [add_job(client, wstack, HOST_2022, store, data, None) for store, data in cases]
    )
    for (store, _), result in zip(cases, results, strict=True):
        assert_ok(result)
        assert result.thumbprint == leaf
        assert in_store(wstack, HOST_2022, store) == {leaf: True}
        (sent,) = imports_into(wstack, HOST_2022, store)
        assert sent["ExpectedThumbprint"] == leaf and "Password" not in sent


def test_chain_ignored_by_default_and_added_with_include_chain(wstack: Stack, client: Client) -> None:
    chain = make_chain("chain")
    leaf, inter, root = (sha1(der_of(c)) for c in (chain.leaf, chain.inter, chain.root))
    data = pfx(chain, "chain-pw", cas=[chain.root, chain.inter])
    (default,) = run_all(client, [add_job(client, wstack, HOST_2022, "CHAIN-DEFAULT", data, "chain-pw")])
    assert_ok(default)
    assert in_store(wstack, HOST_2022, "CHAIN-DEFAULT") == {leaf: True}
    assert inter not in in_store(wstack, HOST_2022, "CA") and root not in in_store(wstack, HOST_2022, "Root")

    (included,) = run_all(
        client, [add_job(client, wstack, HOST_2022, "CHAIN-INCLUDED", data, "chain-pw", include_chain=True)]
    )
    assert_ok(included)
    assert in_store(wstack, HOST_2022, "CHAIN-INCLUDED") == {leaf: True}
    assert in_store(wstack, HOST_2022, "CA").get(inter) is False  # certificate only, in CA
    assert in_store(wstack, HOST_2022, "Root").get(root) is False  # self-signed root, in Root
    assert leaf not in in_store(wstack, HOST_2022, "CA") and inter not in in_store(wstack, HOST_2022, "Root")
    assert any(inter in w and "CA" in w for w in included.warnings), included.warnings
    assert any(root in w and "Root" in w for w in included.warnings), included.warnings
    chain_calls = [p for _, p in calls(wstack, HOST_2022, IMPORT) if p["StorePath"] in ("CA", "Root")]
    assert sorted((p["StorePath"], p["ExpectedThumbprint"]) for p in chain_calls) == [
        ("CA", inter),
        ("Root", root),
    ]
    assert all("Password" not in p for p in chain_calls)


def test_cert_only_inputs_are_added_without_key_or_password(wstack: Stack, client: Client) -> None:
    chain = make_chain("certonly")
    leaf = sha1(der_of(chain.leaf))
    p7 = pkcs7.serialize_certificates([chain.root, chain.leaf, chain.inter], Encoding.DER)
    p7_pem = pkcs7.serialize_certificates([chain.inter, chain.leaf], Encoding.PEM).decode()
    nokey = pkcs12.serialize_key_and_certificates(
        None,
        None,
        None,
        [chain.leaf],
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(b"nokey"),
    )
    cases = [
        ("CERT-ONLY", der_of(chain.leaf), "ignored-password"),
        (
            "CERT-ONLY-PEM",
            chain.leaf.public_bytes(Encoding.PEM).decode() + chain.inter.public_bytes(Encoding.PEM).decode(),
            None,
        ),
        ("PKCS7", p7, None),
        ("PFX-NOKEY", nokey, "nokey"),
    ]
    results = run_all(client, [add_job(client, wstack, HOST_2022, s, c, p) for s, c, p in cases])
    for (store, _, _), result in zip(cases, results, strict=True):
        assert_ok(result)
        assert result.thumbprint == leaf
        assert in_store(wstack, HOST_2022, store) == {leaf: False}
        (sent,) = imports_into(wstack, HOST_2022, store)
        assert bytes(sent["CertificateData"]) == der_of(chain.leaf)
        assert "Password" not in sent
    (pem_p7,) = run_all(client, [add_job(client, wstack, HOST_2022, "PKCS7", p7_pem, None)])
    assert_ok(pem_p7, "already_present")


def test_empty_none_and_unicode_passwords(wstack: Stack, client: Client) -> None:
    chain = make_chain("pwd")
    leaf = sha1(der_of(chain.leaf))
    secret = "Pä$$wört 'x' \"y\" ☺ \n $(whoami) `z`"
    no_pwd = (VECTOR_DIR / "no-password.p12").read_bytes()
    cases = [
        ("PWD-EMPTY", pfx(chain, None), "", leaf),  # cryptography MACs NoEncryption with ""
        ("PWD-NONE", no_pwd, None, vector_thumbprint("no-password.p12")),
        ("PWD-UNICODE", pfx(chain, secret, aes=True), secret, leaf),
    ]
    results = run_all(client, [add_job(client, wstack, HOST_2022, s, c, p) for s, c, p, _ in cases])
    for (store, _, password, thumbprint), result in zip(cases, results, strict=True):
        assert_ok(result)
        assert in_store(wstack, HOST_2022, store) == {thumbprint: True}
        (sent,) = imports_into(wstack, HOST_2022, store)
        assert ("Password" in sent) is (password is not None)
        assert sent.get("Password") == password


# --- provider, exportable, persistence -----------------------------------------------------------
KSP = "Microsoft Software Key Storage Provider"


def test_provider_name_is_validated_against_the_host(wstack: Stack, client: Client) -> None:
    chain = make_chain("prov")
    leaf = sha1(der_of(chain.leaf))
    data = pfx(chain, "prov")
    jobs = [
        add_job(client, wstack, HOST_2022, store, data, "prov", entry_parameters={"ProviderName": provider})
        for store, provider in (
            ("PROV-KSP", KSP),
            ("PROV-CASE", "  microsoft SOFTWARE key storage provider "),
            ("PROV-UNKNOWN", "Contoso HSM Key Storage Provider"),
        )
    ]
    ksp, case, unknown = run_all(client, jobs)
    assert_ok(ksp)
    assert_ok(case)
    assert wstack.host(HOST_2022).windows_host.key_info(leaf).provider == KSP
    assert imports_into(wstack, HOST_2022, "PROV-KSP")[0]["ProviderName"] == KSP
    assert_failed(unknown, "provider_not_found")
    assert "Contoso HSM Key Storage Provider" in unknown.message and KSP in unknown.message
    assert imports_into(wstack, HOST_2022, "PROV-UNKNOWN") == []
    assert in_store(wstack, HOST_2022, "PROV-UNKNOWN") == {}


def test_provider_that_cannot_hold_the_key_type(wstack: Stack, client: Client) -> None:
    chain = make_chain("csp")
    job = add_job(
        client,
        wstack,
        HOST_2022,
        "PROV-CSP-EC",
        pfx(chain, "csp"),
        "csp",
        entry_parameters={"ProviderName": "Microsoft Enhanced Cryptographic Provider v1.0"},
    )
    (result,) = run_all(client, [job])
    assert in_store(wstack, HOST_2022, "PROV-CSP-EC") == {}
    assert_failed(result, "provider_not_found")


def test_keys_are_machine_wide_persisted_and_exportable_only_on_request(
    wstack: Stack, client: Client
) -> None:
    plain, exportable = make_chain("exp-no"), make_chain("exp-yes")
    jobs = [
        add_job(client, wstack, HOST_2022, "EXPORT-NO", pfx(plain, "e"), "e"),
        add_job(client, wstack, HOST_2022, "EXPORT-YES", pfx(exportable, "e"), "e", exportable=True),
    ]
    for result in run_all(client, jobs):
        assert_ok(result)
    host = wstack.host(HOST_2022)
    no, yes = sha1(der_of(plain.leaf)), sha1(der_of(exportable.leaf))
    assert host.windows_host.key_info(no).exportable is False
    assert host.windows_host.key_info(yes).exportable is True
    assert "Exportable" not in imports_into(wstack, HOST_2022, "EXPORT-NO")[0]
    assert imports_into(wstack, HOST_2022, "EXPORT-YES")[0]["Exportable"] is True
    # persisted: the host's state, read back from disk as after a restart, still has both keys
    reopened = WindowsHost.open(wstack.workdir / "sim" / HOST_2022, host.config)
    assert {c.thumbprint: c.has_private_key for c in reopened.certificates("EXPORT-NO")} == {no: True}
    assert reopened.key_info(yes) is not None and reopened.key_info(yes).exportable is True


# --- idempotent Add, Remove --------------------------------------------------------------------
def test_add_is_idempotent_and_overwrite_replaces(wstack: Stack, client: Client) -> None:
    chain = make_chain("idem")
    leaf = sha1(der_of(chain.leaf))
    data = pfx(chain, "idem")
    (first,) = run_all(client, [add_job(client, wstack, HOST_2022, "IDEM", data, "idem")])
    assert_ok(first)
    again, cert_only = run_all(
        client,
        [
            add_job(client, wstack, HOST_2022, "IDEM", data, "idem"),
            add_job(client, wstack, HOST_2022, "IDEM", der_of(chain.leaf), None),
        ],
    )
    assert_ok(again, "already_present")
    assert_ok(cert_only, "already_present")
    assert again.thumbprint == leaf and "already" in again.message
    (replaced,) = run_all(client, [add_job(client, wstack, HOST_2022, "IDEM", data, "idem", overwrite=True)])
    assert_ok(replaced)
    assert "Replaced" in replaced.message
    assert in_store(wstack, HOST_2022, "IDEM") == {leaf: True}
    assert [p.get("Overwrite") for p in imports_into(wstack, HOST_2022, "IDEM")] == [None, None, None, True]

    # present without its key: adding the key is a change, not "already present"
    (bare,) = run_all(client, [add_job(client, wstack, HOST_2022, "IDEM-NOKEY", der_of(chain.leaf), None)])
    assert_ok(bare)
    (keyed,) = run_all(client, [add_job(client, wstack, HOST_2022, "IDEM-NOKEY", data, "idem")])
    assert_ok(keyed)
    assert "overwrite" not in keyed.message.lower() and "private key" in keyed.message, keyed.message
    assert in_store(wstack, HOST_2022, "IDEM-NOKEY") == {leaf: True}


def test_remove_by_normalised_thumbprint_and_already_absent(wstack: Stack, client: Client) -> None:
    chain = make_chain("rm")
    leaf = sha1(der_of(chain.leaf))
    for result in run_all(
        client, [add_job(client, wstack, HOST_2022, f"RM {i}", der_of(chain.leaf), None) for i in range(5)]
    ):
        assert_ok(result)
    spaced = " ".join(leaf[i : i + 2] for i in range(0, 40, 2))
    aliases = [
        spaced.lower(),
        "\u200e" + leaf.lower(),
        leaf[:20] + "\u200f" + leaf[20:],
        "\ufeff" + spaced,
        f"  {leaf}\t",
    ]
    removed = run_all(client, [remove_job(wstack, HOST_2022, f"RM {i}", a) for i, a in enumerate(aliases)])
    for i, result in enumerate(removed):
        assert_ok(result)
        assert result.thumbprint == leaf
        assert in_store(wstack, HOST_2022, f"RM {i}") == {}
    sent = [p for _, p in calls(wstack, HOST_2022, REMOVE) if p["StorePath"].startswith("RM ")]
    assert sorted(p["StorePath"] for p in sent) == [f"RM {i}" for i in range(5)]
    assert {p["Thumbprint"] for p in sent} == {leaf}
    absent, missing_store = run_all(
        client,
        [
            remove_job(wstack, HOST_2022, "RM 0", leaf.lower()),
            remove_job(wstack, HOST_2022, "No Such Store", leaf),
        ],
    )
    assert_ok(absent, "already_absent")
    assert absent.thumbprint == leaf
    assert_failed(missing_store, "store_not_found")
    assert "No Such Store" in missing_store.message


def test_password_never_reaches_redis_or_the_worker_log(wstack: Stack, client: Client) -> None:
    chain = make_chain("leak")
    secret = "Leak-Canary-7d1f0c"
    (result,) = run_all(
        client, [add_job(client, wstack, HOST_QUIET, "My", pfx(chain, secret), "wrong " + secret)]
    )
    assert_failed(result, "pfx_password_incorrect")
    connection = redis.Redis.from_url(wstack.redis_url)
    for key in connection.scan_iter(count=1000):
        kind = connection.type(key)
        values: list[bytes] = []
        if kind == b"string":
            values = [connection.get(key) or b""]
        elif kind == b"list":
            values = connection.lrange(key, 0, -1)
        elif kind == b"hash":
            values = list(connection.hvals(key))
        elif kind == b"stream":
            values = [v for _, fields in connection.xrange(key) for v in fields.values()]
        assert all(secret.encode() not in v for v in values), key
    assert secret not in (wstack.workdir / "worker.log").read_text(encoding="utf-8", errors="replace")
