"""Write PKCS#12 files every supported Windows host imports (3DES/SHA1, 2048 iterations)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.serialization import (
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from . import der
from . import pkcs12_info as p12

LEGACY_KDF_ROUNDS = 2048


def legacy_encryption(password: str | None) -> KeySerializationEncryption:
    """3DES + SHA-1 MAC. No/empty password: unencrypted bags (cryptography cannot encrypt with an
    empty password) and a MAC over the empty password (``legacy_pkcs12`` re-MACs for None)."""
    if not password:
        return NoEncryption()
    return (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(LEGACY_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(SHA1())  # noqa: S303 - what pre-2019 Windows hosts can verify
        .build(password.encode("utf-8"))
    )


def legacy_pkcs12(
    leaf_der: bytes,
    key: PrivateKeyTypes | None,
    chain_der: Sequence[bytes],
    password: str | None,
    friendly_name: str | None = None,
) -> bytes:
    leaf = x509.load_der_x509_certificate(leaf_der)
    cas = [x509.load_der_x509_certificate(c) for c in chain_der]
    data = pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8") if friendly_name else None,
        key,  # type: ignore[arg-type]  # all key types we load are PKCS#12-serialisable
        leaf,
        cas or None,
        legacy_encryption(password),
    )
    return remac_for_no_password(data) if password is None else data


def remac_for_no_password(data: bytes) -> bytes:
    """Recompute the MAC of an (unencrypted) PKCS#12 for "no password" (RFC 7292: zero-length
    password) instead of the empty string, so that None and "" keep their distinct meanings."""
    items = der.sequence(der.parse_single(data), "PFX", 3)
    structure = p12.read_structure(data)
    mac = structure.mac
    if mac is None or mac.pbmac1_prf:
        return data
    size = hashlib.new(mac.hash_name).digest_size
    key = p12.pkcs12_kdf(mac.hash_name, p12.bmp_password(None), mac.salt, 3, mac.iterations, size)
    digest = hmac.new(key, structure.auth_safe, mac.hash_name).digest()
    mac_items = der.sequence(items[2], "MacData", 2)
    digest_info = der.sequence(mac_items[0], "DigestInfo", 2)
    new_digest_info = der.encode_tlv(
        der.TAG_SEQUENCE, digest_info[0].encoded + der.encode_tlv(der.TAG_OCTET_STRING, digest)
    )
    new_mac = der.encode_tlv(der.TAG_SEQUENCE, new_digest_info + b"".join(m.encoded for m in mac_items[1:]))
    return der.encode_tlv(der.TAG_SEQUENCE, items[0].encoded + items[1].encoded + new_mac)
