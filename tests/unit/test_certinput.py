"""producer.certinput: sniffing, passwords, leaf selection, limits, host compatibility, re-wrap."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    pkcs7,
    pkcs12,
)
from cryptography.x509.oid import NameOID

from producer.certinput import (
    ALL_CODES,
    WINDOWS_MAX_PBKDF_ITERATIONS,
    CertificateInputError,
    ParsedCertificate,
    decode_input,
    parse_certificate_input,
    rewrap_pkcs12_legacy,
    to_pkcs12_for_host,
)

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
SECRET = "S3cr3t-$@`\"'pässwörd☺"


# --- fixtures: a root -> intermediate -> leaf chain ------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


ROOT_KEY = ec.generate_private_key(ec.SECP256R1())
INTER_KEY = ec.generate_private_key(ec.SECP256R1())
LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
ROOT = _cert("Test Root", ROOT_KEY, "Test Root", ROOT_KEY, True)
INTER = _cert("Test Intermediate", INTER_KEY, "Test Root", ROOT_KEY, True)
LEAF = _cert("leaf.example.com", LEAF_KEY, "Test Intermediate", INTER_KEY, False)
OTHER = _cert("other.example.com", OTHER_KEY, "Test Intermediate", INTER_KEY, False)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def sha1_upper(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest().upper()


def spki(obj: object) -> bytes:
    return obj.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined,no-any-return]


def p12(
    password: str | None,
    *,
    key: ec.EllipticCurvePrivateKey | None = LEAF_KEY,
    cert: x509.Certificate | None = LEAF,
    cas: list[x509.Certificate] | None = None,
    legacy: bool = True,
    rounds: int = 2048,
) -> bytes:
    enc: KeySerializationEncryption
    if password is None:
        enc = NoEncryption()  # note: cryptography MACs this with the *empty* password
    else:
        builder = PrivateFormat.PKCS12.encryption_builder().kdf_rounds(rounds)
        if legacy:
            builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
                hashes.SHA1()
            )
        else:
            builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(
                hashes.SHA256()
            )
        enc = builder.build(password.encode())
    return pkcs12.serialize_key_and_certificates(b"friendly", key, cert, cas, enc)


# --- a hand-written PKCS#12 encoder (independent of the module) for odd bag layouts -------------
def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def explicit0(inner: bytes) -> bytes:
    return tlv(0xA0, inner)


def key_bag(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    return seq(oid("1.2.840.113549.1.12.10.1.1"), explicit0(pkcs8))


def cert_bag(cert: x509.Certificate) -> bytes:
    value = seq(oid("1.2.840.113549.1.9.22.1"), explicit0(tlv(0x04, der(cert))))
    return seq(oid("1.2.840.113549.1.12.10.1.3"), explicit0(value))


def raw_pfx(*bags: bytes) -> bytes:
    """Unencrypted PKCS#12 without MAC (MacData is optional) holding ``bags`` in that order."""
    safe_contents = seq(*bags)
    data_ci = seq(oid("1.2.840.113549.1.7.1"), explicit0(tlv(0x04, safe_contents)))
    auth_safe = seq(data_ci)
    return seq(tlv(0x02, b"\x03"), seq(oid("1.2.840.113549.1.7.1"), explicit0(tlv(0x04, auth_safe))))


def code_of(data: bytes | str, password: str | None = None, **kw: object) -> CertificateInputError:
    with pytest.raises(CertificateInputError) as info:
        parse_certificate_input(data, password, **kw)  # type: ignore[arg-type]
    assert info.value.code in ALL_CODES
    return info.value


# === sniffing ======================================================================================
LEAF_DER = der(LEAF)
LEAF_B64 = base64.b64encode(LEAF_DER).decode()


def _wrapped(text: str, width: int = 64, eol: str = "\r\n") -> str:
    return eol.join(text[i : i + width] for i in range(0, len(text), width)) + eol


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(LEAF_DER, id="raw-der"),
        pytest.param(LEAF_DER + b"\r\n\x00", id="der-trailing-newline"),
        pytest.param(LEAF_B64.encode(), id="base64"),
        pytest.param(LEAF_B64, id="base64-str"),
        pytest.param(_wrapped(LEAF_B64).encode(), id="base64-crlf"),
        pytest.param(("  " + _wrapped(LEAF_B64, 76, "\n \t")).encode(), id="base64-whitespace"),
        pytest.param(base64.urlsafe_b64encode(LEAF_DER).rstrip(b"="), id="base64url-unpadded"),
        pytest.param(b"\xef\xbb\xbf" + LEAF_B64.encode(), id="utf8-bom-base64"),
        pytest.param(pem(LEAF), id="pem"),
        pytest.param(pem(LEAF).replace(b"\n", b"\r\n"), id="pem-crlf"),
        pytest.param(b"\xef\xbb\xbf" + pem(LEAF), id="utf8-bom-pem"),
        pytest.param("\ufeff" + pem(LEAF).decode(), id="str-bom-pem"),
        pytest.param(b"\xff\xfe" + _wrapped(LEAF_B64).encode("utf-16-le"), id="utf16le-bom"),
        pytest.param(b"\xfe\xff" + _wrapped(LEAF_B64).encode("utf-16-be"), id="utf16be-bom"),
        pytest.param(_wrapped(LEAF_B64).encode("utf-16-le"), id="utf16le-no-bom"),
        pytest.param(_wrapped(LEAF_B64).encode("utf-16-be"), id="utf16be-no-bom"),
        pytest.param(b"\xff\xfe" + pem(LEAF).decode().encode("utf-16-le"), id="utf16le-pem"),
        pytest.param(base64.b64encode(pem(LEAF)), id="base64-of-pem"),
    ],
)
def test_decode_input_variants_give_the_same_bytes(variant: bytes | str) -> None:
    assert decode_input(variant) == LEAF_DER
    parsed = parse_certificate_input(variant, None)
    assert parsed.thumbprint == sha1_upper(LEAF_DER)


def test_decode_input_other_armours() -> None:
    bundle = pkcs7.serialize_certificates([LEAF, INTER], Encoding.DER)
    assert decode_input(pkcs7.serialize_certificates([LEAF, INTER], Encoding.PEM)) == bundle
    pfx = p12("pw")
    armoured = b"-----BEGIN PKCS12-----\n" + base64.encodebytes(pfx) + b"-----END PKCS12-----\n"
    assert decode_input(armoured) == pfx
    assert parse_certificate_input(armoured, "pw").input_format == "pkcs12"
    # several blocks: returned as normalised PEM text
    text = decode_input(pem(LEAF).replace(b"\n", b"\r\n") + pem(INTER))
    assert text.count(b"-----BEGIN CERTIFICATE-----") == 2 and b"\r" not in text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "starts with '<html><body>502 '"),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09", "starts with bytes 00 01 02 03 04 05 06 07"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "starts with bytes 89 50 4e 47 0d 0a 1a 0a"),
        (b"", "empty"),
        (b"  \r\n\t ", "empty"),
        ("", "empty"),
        (b"aGVsbG8gd29ybGQ=", "the decoded data starts with 'hello world'"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB", "no complete PEM block"),
        (b"0\x82\x05\x00abc", "truncated: 7 of 1284 bytes"),  # DER header claiming more bytes than present
    ],
)
def test_garbage_is_invalid_certificate_data(data: bytes | str, expected: str) -> None:
    with pytest.raises(CertificateInputError) as info:
        decode_input(data)
    assert info.value.code == "invalid_certificate_data"
    assert expected in info.value.message
    assert code_of(data).code == "invalid_certificate_data"


def test_truncated_pkcs12_is_invalid() -> None:
    pfx = p12("pw")
    err = code_of(pfx[:-40], "pw")
    assert err.code == "invalid_certificate_data" and "truncated" in err.message


def test_malformed_pkcs12_inside_is_invalid() -> None:
    # outer structure fine, authSafe content not a SEQUENCE
    bad = seq(tlv(0x02, b"\x03"), seq(oid("1.2.840.113549.1.7.1"), explicit0(tlv(0x04, b"\x04\x01x"))))
    assert code_of(bad).code == "invalid_certificate_data"


# === none vs empty vs wrong password ==================================================================
def test_empty_password_file() -> None:
    pfx = p12(None)  # cryptography's unencrypted PKCS#12: MAC over the *empty* password
    parsed = parse_certificate_input(pfx, "")
    assert parsed.has_private_key and parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.pbe is not None and parsed.pbe.key_algorithm == "none"
    err = code_of(pfx, None)
    assert err.code == "pfx_password_incorrect"
    assert 'send "" (an empty string), not none' in err.message


def test_no_password_file() -> None:
    pfx = to_pkcs12_for_host(parse_certificate_input(LEAF_DER, None), LEAF_KEY, None)
    parsed = parse_certificate_input(pfx, None)
    assert parsed.has_private_key and parsed.thumbprint == sha1_upper(LEAF_DER)
    err = code_of(pfx, "")
    assert err.code == "pfx_password_incorrect"
    assert "this file has no password; send none" in err.message.lower()


def test_no_mac_unencrypted_file_accepts_any_password() -> None:
    pfx = raw_pfx(key_bag(LEAF_KEY), cert_bag(LEAF))
    for password in (None, "", "anything"):
        assert parse_certificate_input(pfx, password).has_private_key
    parsed = parse_certificate_input(pfx, None)
    assert parsed.pbe is not None and parsed.pbe.mac_algorithm == "none"


@pytest.mark.parametrize("given", [None, "", "wrong", SECRET + "x"])
def test_wrong_password(given: str | None) -> None:
    pfx = p12(SECRET)
    err = code_of(pfx, given)
    assert err.code == "pfx_password_incorrect"
    assert "check the password" in err.message
    assert SECRET not in str(err) and (not given or given not in str(err))
    assert "send none" not in err.message and 'send ""' not in err.message


@pytest.mark.parametrize("legacy", [True, False])
def test_unicode_password(legacy: bool) -> None:
    pfx = p12(SECRET, legacy=legacy)
    parsed = parse_certificate_input(pfx, SECRET)
    assert parsed.has_private_key and parsed.thumbprint == sha1_upper(LEAF_DER)


# === leaf selection ====================================================================================
def test_leaf_is_the_key_certificate_not_the_first_bag() -> None:
    pfx = raw_pfx(cert_bag(ROOT), cert_bag(INTER), key_bag(LEAF_KEY), cert_bag(LEAF))
    parsed = parse_certificate_input(pfx, None)
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.chain_der == [der(INTER), der(ROOT)]
    # cryptography itself puts ROOT first here; we do not
    pfx2 = pkcs12.serialize_key_and_certificates(None, LEAF_KEY, LEAF, [ROOT, INTER], NoEncryption())
    parsed2 = parse_certificate_input(pfx2, "")
    assert parsed2.thumbprint == sha1_upper(LEAF_DER)
    assert parsed2.chain_der == [der(INTER), der(ROOT)]


def test_duplicate_bags_collapse() -> None:
    pfx = raw_pfx(
        cert_bag(ROOT),
        key_bag(LEAF_KEY),
        cert_bag(LEAF),
        cert_bag(INTER),
        key_bag(LEAF_KEY),
        cert_bag(LEAF),
        cert_bag(ROOT),
    )
    parsed = parse_certificate_input(pfx, None)
    assert parsed.has_private_key
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.chain_der == [der(INTER), der(ROOT)]


def test_multiple_keys() -> None:
    pfx = raw_pfx(key_bag(LEAF_KEY), cert_bag(LEAF), key_bag(OTHER_KEY), cert_bag(OTHER))
    err = code_of(pfx)
    assert err.code == "pfx_multiple_keys"
    assert "2 different private keys" in err.message


def test_key_without_certificate() -> None:
    err = code_of(raw_pfx(key_bag(OTHER_KEY), cert_bag(LEAF), cert_bag(INTER)))
    assert err.code == "pfx_key_without_certificate"
    assert "leaf.example.com" in err.message
    assert code_of(raw_pfx(key_bag(OTHER_KEY))).code == "pfx_key_without_certificate"


def test_pkcs12_without_key_uses_the_end_entity() -> None:
    pfx = raw_pfx(cert_bag(ROOT), cert_bag(LEAF), cert_bag(INTER))
    parsed = parse_certificate_input(pfx, None)
    assert not parsed.has_private_key
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.chain_der == [der(INTER), der(ROOT)]


def test_pkcs12_without_key_ambiguous() -> None:
    err = code_of(raw_pfx(cert_bag(LEAF), cert_bag(OTHER), cert_bag(INTER)))
    assert err.code == "ambiguous_leaf"
    assert "CN=leaf.example.com" in err.message and "CN=other.example.com" in err.message


def test_pkcs12_with_no_certificate_at_all() -> None:
    assert code_of(raw_pfx()).code == "invalid_certificate_data"


# === iteration limit ======================================================================================
def test_iterations_above_windows_limit() -> None:
    pfx = p12("pw", rounds=700_000, legacy=False)
    err = code_of(pfx, "pw")
    assert err.code == "pfx_iterations_exceed_windows_limit"
    assert "700000" in err.message and str(WINDOWS_MAX_PBKDF_ITERATIONS) in err.message
    # checked before the password: a wrong password gets the same answer, quickly
    assert code_of(pfx, "wrong").code == "pfx_iterations_exceed_windows_limit"


def test_iterations_at_the_limit_are_accepted() -> None:
    pfx = p12("pw", rounds=WINDOWS_MAX_PBKDF_ITERATIONS, legacy=False)
    parsed = parse_certificate_input(pfx, "pw")
    assert parsed.pbe is not None and parsed.pbe.max_iterations == WINDOWS_MAX_PBKDF_ITERATIONS


def test_mac_iterations_hand_patched() -> None:
    from producer.certinput import der as d

    pfx = p12("pw")
    top = d.parse_single(pfx)
    version, auth_safe, mac_data = d.children(top)
    digest_info, salt, _ = d.children(mac_data)
    patched_mac = seq(digest_info.encoded, salt.encoded, tlv(0x02, (600_001).to_bytes(3, "big")))
    patched = seq(version.encoded, auth_safe.encoded, patched_mac)
    err = code_of(patched, "pw")
    assert err.code == "pfx_iterations_exceed_windows_limit"
    assert "600001" in err.message and "MAC" in err.message


def test_total_derivation_budget() -> None:
    from producer.certinput.parse import MAX_TOTAL_ITERATIONS, _Budget

    budget = _Budget()
    for _ in range(MAX_TOTAL_ITERATIONS // WINDOWS_MAX_PBKDF_ITERATIONS):
        budget("item", WINDOWS_MAX_PBKDF_ITERATIONS)
    with pytest.raises(CertificateInputError) as info:
        budget("item", 1)
    assert info.value.code == "pfx_iterations_exceed_windows_limit"


# === structure variants ===================================================================================
def test_enveloped_container_is_unsupported() -> None:
    enveloped = seq(oid("1.2.840.113549.1.7.3"), explicit0(seq(tlv(0x02, b"\x00"))))
    pfx = seq(tlv(0x02, b"\x03"), seq(oid("1.2.840.113549.1.7.1"), explicit0(tlv(0x04, seq(enveloped)))))
    err = code_of(pfx)
    assert err.code == "unsupported_certificate_format" and "envelopedData" in err.message


def test_ber_indefinite_lengths_and_chunked_octets() -> None:
    safe_contents = seq(key_bag(LEAF_KEY), cert_bag(LEAF))
    data_ci = b"\x30\x80" + oid("1.2.840.113549.1.7.1") + b"\xa0\x80" + tlv(0x04, safe_contents) + b"\0\0\0\0"
    auth_safe = seq(data_ci)
    half = len(auth_safe) // 2
    chunked = b"\x24\x80" + tlv(0x04, auth_safe[:half]) + tlv(0x04, auth_safe[half:]) + b"\0\0"
    pfx = b"\x30\x80" + tlv(0x02, b"\x03") + seq(oid("1.2.840.113549.1.7.1"), explicit0(chunked)) + b"\0\0"
    parsed = parse_certificate_input(pfx, None)
    assert parsed.has_private_key and parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.pkcs12_bytes == pfx


# === host compatibility / re-wrap =========================================================================
def test_pbes2_refused_on_server_2016() -> None:
    pfx = p12(SECRET, legacy=False, cas=[INTER, ROOT])
    err = code_of(pfx, SECRET, os_build=14393)
    assert err.code == "pfx_algorithm_unsupported_by_host"
    assert "Windows Server 2016 (build 14393)" in err.message
    assert "PBES2/AES-256-CBC/PBKDF2-HMAC-SHA256" in err.message
    assert SECRET not in str(err)
    assert code_of(pfx, SECRET, os_build=9600).message.count("Windows Server 2012 R2 (build 9600)") == 1
    ok = parse_certificate_input(pfx, SECRET, os_build=17763)
    assert ok.pkcs12_bytes == pfx and not ok.rewrapped


def test_pbes2_rewrapped_for_server_2016() -> None:
    pfx = p12(SECRET, legacy=False, cas=[INTER, ROOT])
    parsed = parse_certificate_input(pfx, SECRET, os_build=14393, rewrap_legacy=True)
    assert parsed.rewrapped and parsed.pkcs12_bytes is not None and parsed.pkcs12_bytes != pfx
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.pbe is not None
    assert parsed.pbe.key_algorithm == "pbeWithSHA1And3-KeyTripleDES-CBC"
    assert parsed.pbe.cert_algorithm == "pbeWithSHA1And3-KeyTripleDES-CBC"
    assert parsed.pbe.mac_algorithm == "HMAC-SHA1"
    assert parsed.pbe.max_iterations == 2048 and not parsed.pbe.uses_pbes2
    # the re-wrapped file loads with the same password (cryptography's loader) ...
    loaded = pkcs12.load_pkcs12(parsed.pkcs12_bytes, SECRET.encode())
    assert loaded.cert is not None and loaded.key is not None
    assert sha1_upper(loaded.cert.certificate.public_bytes(Encoding.DER)) == parsed.thumbprint
    assert spki(loaded.key) == spki(loaded.cert.certificate) == spki(LEAF_KEY)
    assert loaded.cert.friendly_name == b"friendly"
    assert {c.certificate for c in loaded.additional_certs} == {INTER, ROOT}
    # ... and passes our own checks for the old host
    again = parse_certificate_input(parsed.pkcs12_bytes, SECRET, os_build=14393)
    assert again.thumbprint == parsed.thumbprint and again.chain_der == [der(INTER), der(ROOT)]


def test_rewrap_function() -> None:
    pfx = p12("pw", legacy=False)
    parsed = parse_certificate_input(pfx, "pw")
    data = rewrap_pkcs12_legacy(parsed, "pw")
    again = parse_certificate_input(data, "pw", os_build=14393)
    assert again.thumbprint == parsed.thumbprint and again.has_private_key
    with pytest.raises(CertificateInputError) as info:
        rewrap_pkcs12_legacy(parsed, "wrong")
    assert info.value.code == "pfx_password_incorrect"
    with pytest.raises(ValueError):
        rewrap_pkcs12_legacy(parse_certificate_input(LEAF_DER, None), "pw")


def test_legacy_file_accepted_on_server_2016() -> None:
    parsed = parse_certificate_input(p12("pw"), "pw", os_build=14393)
    assert not parsed.rewrapped and parsed.pbe is not None and not parsed.pbe.uses_pbes2


# === DER / PEM / PKCS#7 =====================================================================================
def test_der_certificate_ignores_password() -> None:
    for password in (None, "", "ignored"):
        parsed = parse_certificate_input(LEAF_DER, password)
        assert parsed.input_format == "der" and not parsed.has_private_key
        assert parsed.pkcs12_bytes is None and parsed.pbe is None and parsed.chain_der == []
        assert parsed.thumbprint == sha1_upper(LEAF_DER)
        assert parsed.key_algorithm == "ECDSA" and parsed.key_size == 256


def test_rsa_key_description() -> None:
    key = rsa.generate_private_key(65537, 2048)
    cert = _cert("rsa.example.com", key, "Test Intermediate", INTER_KEY, False)
    parsed = parse_certificate_input(der(cert), None)
    assert (parsed.key_algorithm, parsed.key_size) == ("RSA", 2048)


@pytest.mark.parametrize("encoding", [Encoding.DER, Encoding.PEM])
def test_pkcs7_bundle(encoding: Encoding) -> None:
    bundle = pkcs7.serialize_certificates([ROOT, LEAF, INTER, LEAF], encoding)
    parsed = parse_certificate_input(bundle, "ignored")
    assert parsed.input_format == "pkcs7" and not parsed.has_private_key
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.chain_der == [der(INTER), der(ROOT)]


def test_pkcs7_bundle_ambiguous() -> None:
    err = code_of(pkcs7.serialize_certificates([LEAF, OTHER, INTER], Encoding.DER))
    assert err.code == "ambiguous_leaf"


def test_pem_chain_ordering() -> None:
    data = pem(ROOT) + pem(LEAF) + pem(INTER)
    parsed = parse_certificate_input(data, None)
    assert parsed.input_format == "pem"
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.chain_der == [der(INTER), der(ROOT)]


def test_unrelated_chain_members_keep_input_order() -> None:
    unrelated = _cert("Unrelated Root", OTHER_KEY, "Unrelated Root", OTHER_KEY, True)
    pfx = raw_pfx(cert_bag(unrelated), cert_bag(ROOT), key_bag(LEAF_KEY), cert_bag(LEAF), cert_bag(INTER))
    parsed = parse_certificate_input(pfx, None)
    assert parsed.chain_der == [der(INTER), der(ROOT), der(unrelated)]


def test_pem_with_private_key() -> None:
    key_pem = LEAF_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    parsed = parse_certificate_input(pem(INTER) + key_pem + pem(LEAF), "host-pw")
    assert parsed.input_format == "pem" and parsed.has_private_key
    assert parsed.thumbprint == sha1_upper(LEAF_DER)
    assert parsed.pkcs12_bytes is not None and b"-----BEGIN" not in parsed.pkcs12_bytes
    assert parsed.pbe is not None and parsed.pbe.key_algorithm == "pbeWithSHA1And3-KeyTripleDES-CBC"
    loaded = pkcs12.load_pkcs12(parsed.pkcs12_bytes, b"host-pw")
    assert loaded.key is not None and loaded.cert is not None
    assert spki(loaded.key) == spki(LEAF_KEY) and loaded.cert.certificate == LEAF
    assert (
        parse_certificate_input(parsed.pkcs12_bytes, "host-pw", os_build=14393).thumbprint
        == parsed.thumbprint
    )


def test_pem_with_encrypted_private_key() -> None:
    key_pem = LEAF_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"kpw"))
    parsed = parse_certificate_input(pem(LEAF) + key_pem, "kpw")
    assert parsed.has_private_key and parsed.pkcs12_bytes is not None
    assert code_of(pem(LEAF) + key_pem, "nope").code == "pfx_password_incorrect"
    assert code_of(pem(LEAF) + key_pem, None).code == "pfx_password_incorrect"
    legacy = LEAF_KEY.private_bytes(
        Encoding.PEM, PrivateFormat.TraditionalOpenSSL, BestAvailableEncryption(b"kpw")
    )
    assert b"Proc-Type" in legacy
    assert parse_certificate_input(pem(LEAF) + legacy, "kpw").has_private_key


def test_pem_key_errors() -> None:
    key_pem = OTHER_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    assert code_of(pem(LEAF) + key_pem, "pw").code == "pfx_key_without_certificate"
    leaf_key = LEAF_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    assert code_of(pem(LEAF) + pem(OTHER) + leaf_key + key_pem, "pw").code == "pfx_multiple_keys"
    assert code_of(leaf_key, "pw").code == "pfx_key_without_certificate"


def test_to_pkcs12_for_host_checks_the_key() -> None:
    parsed = parse_certificate_input(LEAF_DER, None)
    with pytest.raises(CertificateInputError) as info:
        to_pkcs12_for_host(parsed, OTHER_KEY, "pw")
    assert info.value.code == "pfx_key_without_certificate"
    data = to_pkcs12_for_host(parsed, LEAF_KEY, "pw")
    assert parse_certificate_input(data, "pw").has_private_key


def test_unsupported_inputs() -> None:
    pkcs8 = LEAF_KEY.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    err = code_of(pkcs8)
    assert err.code == "unsupported_certificate_format" and "private key" in err.message
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name("csr")).sign(LEAF_KEY, hashes.SHA256())
    assert "signing request" in code_of(csr.public_bytes(Encoding.DER)).message
    assert code_of(csr.public_bytes(Encoding.PEM)).code == "unsupported_certificate_format"
    pub = LEAF_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert code_of(pub).code == "unsupported_certificate_format"


def test_parsed_repr_hides_bytes() -> None:
    parsed = parse_certificate_input(p12("pw"), "pw")
    text = repr(parsed)
    assert parsed.thumbprint in text and "pkcs12_bytes" not in text and "leaf_der" not in text
    assert isinstance(parsed, ParsedCertificate)
