"""``Get-WinCertInventory`` as the simulator runs it, on real certificates (no mocks)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import re
import time
from pathlib import Path
from typing import Any

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from simulator.commands import REGISTRY
from simulator.config import HostConfig, SeedSpec
from simulator.runtime import CommandContext, CommandError
from simulator.windows import StoredCertificate, WindowsHost, format_name
from simulator.windows.certificates import format_ip

X509_VECTORS = Path(cryptography_vectors.__path__[0]) / "x509"
DER = serialization.Encoding.DER
KEYS = [
    "Thumbprint", "Subject", "Issuer", "SerialNumber", "NotBefore", "NotAfter", "HasPrivateKey",
    "FriendlyName", "KeyAlgorithm", "KeySize", "Sans", "RawData",
]
HOSTILE_STORE_NAMES = ['a"b', "$(Remove-Item C:\\)", "`whoami`", "x;y", "*", "My*", "My\\..\\Root", "my "]


class CollectingContext(CommandContext):
    """A CommandContext that keeps what the command writes."""

    def __init__(self, host: WindowsHost) -> None:
        super().__init__(host)
        self.outputs: list[Any] = []
        self.warnings: list[str] = []
        self.verbose: list[str] = []
        self.errors: list[tuple[str, str]] = []

    def write_output(self, obj: Any) -> None:
        self.outputs.append(obj)

    def write_warning(self, message: str) -> None:
        self.warnings.append(message)

    def write_verbose(self, message: str) -> None:
        self.verbose.append(message)

    def write_error(self, message: str, error_id: str, category: str = "NotSpecified",
                    target: str | None = None) -> None:
        self.errors.append((message, error_id))


def run(host: WindowsHost, name: str, **params: Any) -> CollectingContext:
    """Bind ``params`` like the PSRP layer does and run the registered command."""
    spec = REGISTRY.get(name)
    assert spec is not None
    ctx = CollectingContext(host)
    spec.func(ctx, REGISTRY.bind(spec, list(params.items())))
    return ctx


def inventory(host: WindowsHost, store: str) -> tuple[list[dict[str, Any]], CollectingContext]:
    ctx = run(host, "Get-WinCertInventory", StorePath=store)
    lines = []
    for output in ctx.outputs:  # batches: newline-separated compact records
        assert isinstance(output, str)
        for line in output.split("\n"):
            assert line == json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
            lines.append(line)
    return [json.loads(line) for line in lines], ctx


@pytest.fixture
def host(tmp_path: Path) -> WindowsHost:
    return WindowsHost.open(tmp_path / "host", HostConfig(name="WIN-SIM01"))


def build(
    subject: x509.Name,
    key: Any,
    *,
    sign_key: Any = None,
    serial: int = 0x1234,
    extensions: list[x509.ExtensionType] | None = None,
    not_before: dt.datetime = dt.datetime(2025, 11, 29, 14, 2, 52, tzinfo=dt.UTC),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Issuing CA")]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=730))
    )
    for ext in extensions or []:
        builder = builder.add_extension(ext, critical=False)
    signer = sign_key or key
    edwards = isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    algorithm = None if edwards else hashes.SHA256()
    return builder.sign(signer, algorithm)


def cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


# -- the cryptography-vectors X.509 files ----------------------------------------------------

_PEM_CERT = re.compile(
    rb"-----BEGIN (X509 )?CERTIFICATE-----(.*?)-----END (X509 )?CERTIFICATE-----", re.DOTALL
)


def vector_thumbprints() -> set[str]:
    """Independently: SHA-1 of every certificate directly under x509/ that cryptography loads."""
    found: set[str] = set()
    for path in sorted(p for p in X509_VECTORS.iterdir() if p.is_file()):
        data = path.read_bytes()
        if b"-----BEGIN" in data:
            for match in _PEM_CERT.finditer(data):
                try:
                    x509.load_pem_x509_certificate(match.group(0))
                except ValueError:
                    continue
                body = b"".join(line for line in match.group(2).splitlines() if b":" not in line)
                found.add(hashlib.sha1(base64.b64decode(body)).hexdigest().upper())
        else:
            try:
                x509.load_der_x509_certificate(data)
            except ValueError:
                continue
            found.add(hashlib.sha1(data).hexdigest().upper())
    return found


def test_inventory_of_every_x509_vector(tmp_path: Path) -> None:
    cfg = HostConfig(name="WIN-VECTORS", seed=[SeedSpec(store="Root", path=X509_VECTORS)])
    host = WindowsHost.open(tmp_path, cfg)
    expected = vector_thumbprints()
    assert len(expected) >= 20

    started = time.perf_counter()
    records, ctx = inventory(host, "Root")
    elapsed = time.perf_counter() - started
    skipped = {m.split()[2].rstrip(":") for m in ctx.warnings if m.startswith("Skipped certificate ")}
    reported = [r["Thumbprint"] for r in records]
    print(f"\nx509 vectors: {len(expected)} certificates, {len(records)} reported, {len(skipped)} skipped,"
          f" {len(ctx.warnings)} warnings, inventory {elapsed * 1000:.1f} ms")

    assert len(reported) == len(set(reported))
    assert set(reported) | skipped == expected
    assert not skipped, ctx.warnings  # every certificate cryptography loads is inventoried today
    assert reported == sorted(reported)  # registry enumeration order
    for record in records:
        assert list(record) == KEYS
        der = base64.b64decode(record["RawData"])
        assert hashlib.sha1(der).hexdigest().upper() == record["Thumbprint"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["NotBefore"])
        assert re.fullmatch(r"[0-9A-F]*", record["SerialNumber"])
        assert record["HasPrivateKey"] is False and record["FriendlyName"] == ""
        for san in record["Sans"]:
            assert set(san) == {"Type", "Value"}
            assert san["Type"] in {"dns", "ip", "email", "upn", "uri", "dn", "other"}

    by_thumb = {r["Thumbprint"]: r for r in records}
    io = x509.load_pem_x509_certificate((X509_VECTORS / "cryptography.io.pem").read_bytes())
    io_record = by_thumb[hashlib.sha1(io.public_bytes(DER)).hexdigest().upper()]
    assert {"Type": "dns", "Value": "www.cryptography.io"} in io_record["Sans"]
    assert io_record["KeyAlgorithm"] == "RSA" and io_record["KeySize"] == io.public_key().key_size
    assert io_record["NotBefore"] == io.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")

    # Vectors whose SANs are unusual GeneralName kinds still come out structured.
    edi = x509.load_der_x509_certificate((X509_VECTORS / "san_edipartyname.der").read_bytes())
    edi_sans = by_thumb[hashlib.sha1(edi.public_bytes(DER)).hexdigest().upper()]["Sans"]
    assert edi_sans and all(s["Type"] == "other" and s["Value"].startswith("ediPartyName=") for s in edi_sans)
    x400 = x509.load_der_x509_certificate((X509_VECTORS / "san_x400address.der").read_bytes())
    x400_sans = by_thumb[hashlib.sha1(x400.public_bytes(DER)).hexdigest().upper()]["Sans"]
    assert any(s["Type"] == "other" and s["Value"].startswith("x400Address=") for s in x400_sans)


# -- record contents --------------------------------------------------------------------------

def test_structured_sans_exact_values(host: WindowsHost) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    upn = b"\x0c\x14svc-web@corp.example"  # UTF8String
    other_value = b"\x04\x02\xca\xfe"  # OCTET STRING under an unknown otherName type
    san = x509.SubjectAlternativeName([
        x509.DNSName("www.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.RFC822Name("admin@example.com"),
        x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), upn),
        x509.UniformResourceIdentifier("https://example.com/path?q=1"),
        x509.DirectoryName(x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
        ])),
        x509.OtherName(ObjectIdentifier("1.2.3.4"), other_value),
        x509.RegisteredID(ObjectIdentifier("1.2.840.113549")),
    ])
    cert = build(cn("sans.example.com"), key, extensions=[san])
    host.add_certificate("My", cert.public_bytes(DER), key, "TLS")
    [record], ctx = inventory(host, "My")
    assert ctx.warnings == []
    assert record["Sans"] == [
        {"Type": "dns", "Value": "www.example.com"},
        {"Type": "ip", "Value": "192.0.2.10"},
        {"Type": "ip", "Value": "2001:db8::1"},
        {"Type": "email", "Value": "admin@example.com"},
        {"Type": "upn", "Value": "svc-web@corp.example"},
        {"Type": "uri", "Value": "https://example.com/path?q=1"},
        {"Type": "dn", "Value": 'O="Example, Inc.", C=US'},
        {"Type": "other", "Value": "1.2.3.4=0402CAFE"},
        {"Type": "other", "Value": "registeredID=1.2.840.113549"},
    ]
    assert record["HasPrivateKey"] is True and record["FriendlyName"] == "TLS"
    assert record["NotBefore"] == "2025-11-29T14:02:52Z"
    assert record["NotAfter"] == "2027-11-29T14:02:52Z"
    assert record["KeyAlgorithm"] == "ECDSA" and record["KeySize"] == 256


def test_windows_style_subject_with_tricky_values(host: WindowsHost) -> None:
    subject = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "com")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "a;b")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.LOCALITY_NAME, "O'Fallon")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc.")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, " Ops ")]),
        x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.COMMON_NAME, "x=y"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "042"),
        ]),
        x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "Private Organization"),
        ]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example.com")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.GIVEN_NAME, "Zoë")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, 'say "hi" <#>')]),
    ])
    key = ec.generate_private_key(ec.SECP384R1())
    cert = build(subject, key)
    host.add_certificate("My", cert.public_bytes(DER))
    [record], _ = inventory(host, "My")
    assert record["Subject"] == (
        'CN="say ""hi"" <#>", G=Zoë, E=ops@example.com, OID.2.5.4.15=Private Organization,'
        ' CN="x=y" + SERIALNUMBER=042, OU=" Ops ", O="Acme, Inc.", L=O\'Fallon, S="a;b",'
        " DC=example, DC=com, C=US"
    )
    assert record["Issuer"] == "CN=Issuing CA"
    assert record["KeyAlgorithm"] == "ECDSA" and record["KeySize"] == 384


def test_name_value_encodings() -> None:
    def name(tag: int, value: bytes) -> bytes:
        atv = b"\x06\x03\x55\x04\x03" + bytes([tag, len(value)]) + value
        seq = b"\x30" + bytes([len(atv)]) + atv
        rdn = b"\x31" + bytes([len(seq)]) + seq
        return b"\x30" + bytes([len(rdn)]) + rdn

    assert format_name(name(0x1E, "Zoë".encode("utf-16-be"))) == "CN=Zoë"  # BMPString
    assert format_name(name(0x14, "Zoë".encode())) == "CN=Zoë"  # T61String holding UTF-8
    assert format_name(name(0x14, b"Zo\xeb")) == "CN=Zoë"  # T61String, 8-bit
    assert format_name(name(0x13, b"")) == 'CN=""'
    assert format_name(name(0x03, b"\x00\xff")) == "CN=#030200FF"  # not a string type
    assert format_name(b"\x30\x00") == ""


@pytest.mark.parametrize(
    ("octets", "text"),
    [
        (bytes(16), "::"),
        (bytes(15) + b"\x01", "::1"),
        (bytes.fromhex("20010db8000000010000000000000001"), "2001:db8:0:1::1"),
        (bytes.fromhex("20010db8000000000001000000000001"), "2001:db8::1:0:0:1"),
        (bytes.fromhex("20010db8000100010001000100010001"), "2001:db8:1:1:1:1:1:1"),
        (bytes.fromhex("20010db8000000010001000100010001"), "2001:db8:0:1:1:1:1:1"),
        (bytes.fromhex("00000000000000000000ffffc0000201"), "::ffff:c000:201"),
        (bytes([10, 0, 0, 1]), "10.0.0.1"),
        (b"\x0a\x00", None),
    ],
)
def test_ip_text_is_rfc5952(octets: bytes, text: str | None) -> None:
    assert format_ip(octets) == text


@pytest.mark.parametrize(
    ("make_key", "algorithm", "size"),
    [
        (lambda: rsa.generate_private_key(65537, 2048), "RSA", 2048),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ECDSA", 521),
        (lambda: dsa.generate_private_key(2048), "DSA", 2048),
        (ed25519.Ed25519PrivateKey.generate, "Ed25519", 256),
        (ed448.Ed448PrivateKey.generate, "Ed448", 456),
    ],
)
def test_key_algorithm_and_size(host: WindowsHost, make_key: Any, algorithm: str, size: int) -> None:
    key = make_key()
    signer = ec.generate_private_key(ec.SECP256R1()) if isinstance(key, dsa.DSAPrivateKey) else key
    cert = build(cn(algorithm), key, sign_key=signer)
    host.add_certificate("My", cert.public_bytes(DER))
    [record], _ = inventory(host, "My")
    assert (record["KeyAlgorithm"], record["KeySize"]) == (algorithm, size)


def test_serial_number_is_the_encoded_big_endian_bytes(host: WindowsHost) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    high_bit = build(cn("serial-a"), key, serial=0x80AB)  # DER needs a leading 00
    small = build(cn("serial-b"), key, serial=0x0102030405)
    host.add_certificate("CA", high_bit.public_bytes(DER))
    host.add_certificate("CA", small.public_bytes(DER))
    records, _ = inventory(host, "ca")
    assert {r["Subject"]: r["SerialNumber"] for r in records} == {
        "CN=serial-a": "0080AB",
        "CN=serial-b": "0102030405",
    }


def test_undecodable_san_extension_reports_certificate_without_sans(host: WindowsHost) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # GeneralNames whose dNSName claims 9 octets but holds 3.
    broken = x509.UnrecognizedExtension(
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x82\x09abc"
    )
    cert = build(cn("broken-san"), key, extensions=[broken])
    host.add_certificate("My", cert.public_bytes(DER))
    [record], ctx = inventory(host, "My")
    assert record["Sans"] == [] and record["Subject"] == "CN=broken-san"
    thumb = record["Thumbprint"]
    assert ctx.warnings == [
        f"Certificate {thumb}: the subject alternative name extension could not be decoded"
        " (DER: length exceeds the available data); reported without SANs."
    ]


def test_unreadable_certificate_is_skipped_with_warning(host: WindowsHost) -> None:
    """An entry the simulator cannot read is skipped with a warning; the others are listed.

    ``add_certificate`` refuses such bytes, so the vector (an invalid UTCTime) goes straight into
    the store, standing for a certificate Windows holds but cannot render.
    """
    pem = (X509_VECTORS / "badasn1time.pem").read_bytes()
    body = b"".join(pem.split(b"-----")[2].split())
    bad = StoredCertificate(base64.b64decode(body))
    host.get_store("My")._put(bad)  # type: ignore[union-attr]
    key = ec.generate_private_key(ec.SECP256R1())
    host.add_certificate("My", build(cn("good"), key).public_bytes(DER))
    records, ctx = inventory(host, "My")
    assert [r["Subject"] for r in records] == ["CN=good"]
    [warning] = ctx.warnings
    assert warning.startswith(f"Skipped certificate {bad.thumbprint}: ")
    assert "not_after" in warning or "UtcTime" in warning


# -- errors and hostile input -----------------------------------------------------------------

def test_missing_store_is_a_terminating_store_not_found(host: WindowsHost) -> None:
    with pytest.raises(CommandError) as info:
        run(host, "Get-WinCertInventory", StorePath="NoSuchStore")
    error = info.value
    assert error.error_id == "WinCert.StoreNotFound"
    assert error.category == "ObjectNotFound"
    assert error.target == "NoSuchStore"
    assert error.message == "Certificate store 'NoSuchStore' was not found in LocalMachine."


def _snapshot(host: WindowsHost, state_dir: Path) -> tuple[Any, ...]:
    files = sorted(
        (str(p.relative_to(state_dir)), p.read_bytes()) for p in state_dir.rglob("*") if p.is_file()
    )
    stores = {name: [e.thumbprint for e in store.list()] for name, store in host.stores.items()}
    return files, stores


@pytest.mark.parametrize("store_name", HOSTILE_STORE_NAMES)
def test_hostile_store_names_are_just_missing_stores(tmp_path: Path, store_name: str) -> None:
    state = tmp_path / "host"
    host = WindowsHost.open(state, HostConfig(name="WIN-SIM01"))
    key = ec.generate_private_key(ec.SECP256R1())
    host.add_certificate("My", build(cn("present"), key).public_bytes(DER), key)
    before = _snapshot(host, state)
    ctx = CollectingContext(host)
    spec = REGISTRY.get("Get-WinCertInventory")
    assert spec is not None
    with pytest.raises(CommandError) as info:
        spec.func(ctx, REGISTRY.bind(spec, [("StorePath", store_name)]))
    assert info.value.error_id == "WinCert.StoreNotFound"
    assert info.value.target == store_name
    assert info.value.message == f"Certificate store '{store_name}' was not found in LocalMachine."
    assert ctx.outputs == [] and ctx.warnings == []
    assert _snapshot(host, state) == before


def test_store_path_is_case_insensitive(host: WindowsHost) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    host.add_certificate("Remote Desktop", build(cn("rdp"), key).public_bytes(DER))
    assert [r["Subject"] for r in inventory(host, "REMOTE DESKTOP")[0]] == ["CN=rdp"]
    assert inventory(host, "my")[0] == []


def test_empty_store_path_fails_validation_like_powershell(host: WindowsHost) -> None:
    with pytest.raises(CommandError) as info:
        run(host, "Get-WinCertInventory", StorePath="")
    assert info.value.error_id == "ParameterArgumentValidationError,Get-WinCertInventory"
    with pytest.raises(CommandError) as missing:
        run(host, "Get-WinCertInventory")
    assert missing.value.error_id == "MissingMandatoryParameter,Get-WinCertInventory"


def test_stopped_pipeline_writes_nothing_more(host: WindowsHost) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(3):
        host.add_certificate("My", build(cn(f"c{i}"), key, serial=i + 1).public_bytes(DER))
    spec = REGISTRY.get("Get-WinCertInventory")
    assert spec is not None
    ctx = CollectingContext(host)
    ctx.cancelled.set()
    spec.func(ctx, {"StorePath": "My"})
    assert ctx.outputs == []


def test_store_changes_show_in_the_next_inventory(host: WindowsHost) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    entry = host.add_certificate("My", build(cn("short-lived"), key).public_bytes(DER))
    assert len(inventory(host, "My")[0]) == 1
    host.remove_certificate("My", entry.thumbprint)
    assert inventory(host, "My")[0] == []


def test_full_records_come_in_batches_of_about_64_kib(host: WindowsHost) -> None:
    from simulator.commands.inventory import BATCH_CHARACTERS

    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(160):  # ~1 KB records: three batches
        host.add_certificate("My", build(cn(f"batch-{i}.contoso.test"), key).public_bytes(DER))
    records, ctx = inventory(host, "My")
    assert len(records) == 160 and len({r["Thumbprint"] for r in records}) == 160
    assert 1 < len(ctx.outputs) < 10
    for output in ctx.outputs[:-1]:  # each string ends with the record that reached the limit
        last = output.rsplit("\n", 1)[-1]
        assert BATCH_CHARACTERS <= len(output) < BATCH_CHARACTERS + len(last) + 1
    # known certificates: their one record stays a separate, last string
    thumbprints = [r["Thumbprint"] for r in records[:100]]
    known = run(host, "Get-WinCertInventory", StorePath="My", KnownThumbprint=",".join(thumbprints))
    assert json.loads(known.outputs[-1])["KnownCertificates"][0][0] in range(100)
    assert sum(len(o.split("\n")) for o in known.outputs[:-1]) == 60
