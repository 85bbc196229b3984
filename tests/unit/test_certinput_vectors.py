"""Every PKCS#12 file in cryptography-vectors through producer.certinput.

The table below is the reference: each file's password (found by trying None, "", "cryptography"
and "password"; note that the ``*-no-pwd`` files are MACed with *no* password while
``java-truststore.p12`` is MACed with the *empty* password) and its expected outcome. A file
added to the vectors package without a table entry fails ``test_every_vector_is_in_the_table``.

Expected thumbprints are computed here independently of the module: cryptography's own PKCS#12
loader, key-to-certificate matching written in this file, and hashlib.sha1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs12

from producer.certinput import CertificateInputError, parse_certificate_input

pytestmark = pytest.mark.filterwarnings("ignore:PKCS#12 bundle could not be parsed as DER")

VECTOR_DIR = Path(cryptography_vectors.__path__[0]) / "pkcs12"

WITH_KEY = "added-with-key"
WITHOUT_KEY = "added-without-key"

TDES = "pbeWithSHA1And3-KeyTripleDES-CBC"
RC2_40 = "pbeWithSHA1And40BitRC2-CBC"
AES_SHA1 = "PBES2/AES-256-CBC/PBKDF2-HMAC-SHA1"


class Vector(NamedTuple):
    password: str | None
    outcome: str  # WITH_KEY, WITHOUT_KEY, or an exact failure code
    chain: int = 0  # certificates other than the leaf
    pbe: tuple[str, str, str] | None = None  # (key_algorithm, cert_algorithm, mac_algorithm)
    aes: bool = False  # PBES2-protected: refused for Windows Server 2016 unless re-wrapped


_NO_PWD_KEY = Vector(None, WITH_KEY, 2, ("none", "none", "HMAC-SHA1"))
_PWD_KEY = Vector("password", WITH_KEY, 2, (TDES, TDES, "HMAC-SHA1"))
_NO_PWD_NOKEY = Vector(None, "ambiguous_leaf")  # two unrelated certificates, no key
_PWD_NOKEY = Vector("password", "ambiguous_leaf")

VECTORS: dict[str, Vector] = {
    "cert-aes256cbc-no-key.p12": Vector(
        "cryptography", WITHOUT_KEY, 0, ("absent", AES_SHA1, "HMAC-SHA1"), aes=True
    ),
    "cert-key-aes256cbc.p12": Vector(
        "cryptography", WITH_KEY, 0, (AES_SHA1, AES_SHA1, "HMAC-SHA1"), aes=True
    ),
    "cert-none-key-none.p12": Vector("cryptography", WITH_KEY, 0, ("none", "none", "HMAC-SHA1")),
    "cert-rc2-key-3des.p12": Vector("cryptography", WITH_KEY, 0, (TDES, RC2_40, "HMAC-SHA1")),
    # a Java trust store: two CA certificates (PyCA DSA CA, Let's Encrypt X3), empty password
    "java-truststore.p12": Vector("", "ambiguous_leaf"),
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
    "no-cert-key-aes256cbc.p12": Vector("cryptography", "pfx_key_without_certificate"),
    "no-cert-name-2-no-pwd.p12": _NO_PWD_NOKEY,
    "no-cert-name-2-pwd.p12": _PWD_NOKEY,
    "no-cert-name-3-no-pwd.p12": _NO_PWD_NOKEY,
    "no-cert-name-3-pwd.p12": _PWD_NOKEY,
    "no-cert-name-all-no-pwd.p12": _NO_PWD_NOKEY,
    "no-cert-name-all-pwd.p12": _PWD_NOKEY,
    "no-cert-name-unicode-no-pwd.p12": _NO_PWD_NOKEY,
    "no-cert-name-unicode-pwd.p12": _PWD_NOKEY,
    "no-cert-no-name-no-pwd.p12": _NO_PWD_NOKEY,
    "no-cert-no-name-pwd.p12": _PWD_NOKEY,
    "no-name-no-pwd.p12": _NO_PWD_KEY,
    "no-name-pwd.p12": _PWD_KEY,
    "no-password.p12": Vector(None, WITH_KEY, 0, (TDES, RC2_40, "HMAC-SHA1")),
}


def _vector_files() -> list[str]:
    return sorted(f for f in os.listdir(VECTOR_DIR) if f.lower().endswith((".p12", ".pfx")))


def _read(name: str) -> bytes:
    return (VECTOR_DIR / name).read_bytes()


def _pw_bytes(password: str | None) -> bytes | None:
    return None if password is None else password.encode()


def _spki_bytes(public_key: object) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined,no-any-return]


def _independent(name: str, password: str | None) -> tuple[str, list[bytes]]:
    """(expected thumbprint, DER of all other certificates), without producer.certinput."""
    loaded = pkcs12.load_pkcs12(_read(name), _pw_bytes(password))
    certs: list[x509.Certificate] = []
    if loaded.cert is not None:
        certs.append(loaded.cert.certificate)
    certs.extend(c.certificate for c in loaded.additional_certs)
    ders = list(dict.fromkeys(c.public_bytes(Encoding.DER) for c in certs))
    if loaded.key is not None:
        key_spki = _spki_bytes(loaded.key.public_key())
        matching = [
            d for d in ders if _spki_bytes(x509.load_der_x509_certificate(d).public_key()) == key_spki
        ]
        assert len(matching) == 1
        leaf = matching[0]
    else:
        assert len(ders) == 1
        leaf = ders[0]
    return hashlib.sha1(leaf).hexdigest().upper(), [d for d in ders if d != leaf]


def test_every_vector_is_in_the_table() -> None:
    files = _vector_files()
    assert files, f"no PKCS#12 vectors found in {VECTOR_DIR}"
    missing = [f for f in files if f not in VECTORS]
    assert not missing, f"PKCS#12 vectors without an expected outcome in VECTORS: {missing}"
    stale = [f for f in VECTORS if f not in files]
    assert not stale, f"table entries for files that no longer exist: {stale}"


@pytest.mark.parametrize("name", _vector_files())
def test_vector_outcome(name: str) -> None:
    vector = VECTORS.get(name)
    assert vector is not None, f"{name} has no table entry"
    data = _read(name)
    if vector.outcome not in (WITH_KEY, WITHOUT_KEY):
        with pytest.raises(CertificateInputError) as info:
            parse_certificate_input(data, vector.password)
        assert info.value.code == vector.outcome
        return
    parsed = parse_certificate_input(data, vector.password)
    thumbprint, others = _independent(name, vector.password)
    assert parsed.thumbprint == thumbprint
    assert hashlib.sha1(parsed.leaf_der).hexdigest().upper() == thumbprint
    assert parsed.has_private_key is (vector.outcome == WITH_KEY)
    assert parsed.input_format == "pkcs12"
    assert parsed.pkcs12_bytes == data
    assert sorted(parsed.chain_der) == sorted(others)
    assert len(parsed.chain_der) == vector.chain
    assert parsed.pbe is not None
    assert (parsed.pbe.key_algorithm, parsed.pbe.cert_algorithm, parsed.pbe.mac_algorithm) == vector.pbe
    assert parsed.key_algorithm == "ECDSA" and parsed.key_size == 256


@pytest.mark.parametrize("name", _vector_files())
def test_vector_wrong_password(name: str) -> None:
    vector = VECTORS[name]
    with pytest.raises(CertificateInputError) as info:
        parse_certificate_input(_read(name), "definitely-Wrong-$@")
    assert info.value.code == "pfx_password_incorrect"
    assert "definitely-Wrong" not in str(info.value)
    if vector.password in (None, ""):
        other = "" if vector.password is None else None
        with pytest.raises(CertificateInputError) as info:
            parse_certificate_input(_read(name), other)
        assert info.value.code == "pfx_password_incorrect"
        expected_hint = "send none" if vector.password is None else 'send ""'
        assert expected_hint in info.value.message


@pytest.mark.parametrize("name", [n for n, v in VECTORS.items() if v.aes])
def test_aes_vectors_on_server_2016(name: str) -> None:
    vector = VECTORS[name]
    data = _read(name)
    with pytest.raises(CertificateInputError) as info:
        parse_certificate_input(data, vector.password, os_build=14393)
    assert info.value.code == "pfx_algorithm_unsupported_by_host"
    assert "Windows Server 2016 (build 14393)" in info.value.message
    assert "AES-256-CBC" in info.value.message
    assert parse_certificate_input(data, vector.password, os_build=17763).pkcs12_bytes == data

    rewrapped = parse_certificate_input(data, vector.password, os_build=14393, rewrap_legacy=True)
    thumbprint, _ = _independent(name, vector.password)
    assert rewrapped.thumbprint == thumbprint
    assert rewrapped.rewrapped and rewrapped.pkcs12_bytes is not None
    assert rewrapped.pbe is not None and not rewrapped.pbe.uses_pbes2
    loaded = pkcs12.load_pkcs12(rewrapped.pkcs12_bytes, _pw_bytes(vector.password))
    if vector.outcome == WITH_KEY:
        assert loaded.key is not None and loaded.cert is not None
        assert (
            hashlib.sha1(loaded.cert.certificate.public_bytes(Encoding.DER)).hexdigest().upper() == thumbprint
        )
        assert _spki_bytes(loaded.key.public_key()) == _spki_bytes(loaded.cert.certificate.public_key())
    else:  # OpenSSL files a key-less certificate under additional_certs
        assert loaded.key is None
        ders = [c.certificate.public_bytes(Encoding.DER) for c in loaded.additional_certs]
        assert [hashlib.sha1(d).hexdigest().upper() for d in ders] == [thumbprint]
    again = parse_certificate_input(rewrapped.pkcs12_bytes, vector.password, os_build=14393)
    assert again.thumbprint == thumbprint and again.has_private_key is (vector.outcome == WITH_KEY)


@pytest.mark.parametrize(
    "name",
    [n for n, v in VECTORS.items() if not v.aes and v.outcome in (WITH_KEY, WITHOUT_KEY)],
)
def test_legacy_vectors_need_no_rewrap_on_server_2016(name: str) -> None:
    vector = VECTORS[name]
    parsed = parse_certificate_input(_read(name), vector.password, os_build=14393)
    assert not parsed.rewrapped
