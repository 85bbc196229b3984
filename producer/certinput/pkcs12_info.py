"""Read a PKCS#12 (PFX) file ourselves: structure, protection parameters, MAC, bags.

``cryptography`` loads PKCS#12 files but hides what we need to decide before importing on a
Windows host: the iteration counts and algorithms that protect the file, every bag (it returns
one key and silently drops others), and the exact password semantics (OpenSSL tries both "no
password" and "empty password"; we verify exactly the one given). So the worker reads the
ASN.1 (RFC 7292) itself, verifies the MAC, and decrypts containers and shrouded keys with the
primitives from ``cryptography`` (and :mod:`.rc2` for 40-bit RC2).

Two-phase API so no key derivation happens before limits are checked:

* :func:`read_structure` parses the outer layers (no password needed).
* :func:`open_contents` verifies the MAC and decrypts, checking every iteration count against
  a limit before deriving anything from it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from . import der
from .der import DerError, Tlv
from .rc2 import rc2_cbc_decrypt

# --- OIDs -------------------------------------------------------------------------------------
OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"

OID_KEY_BAG = "1.2.840.113549.1.12.10.1.1"
OID_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
OID_CERT_BAG = "1.2.840.113549.1.12.10.1.3"
OID_CRL_BAG = "1.2.840.113549.1.12.10.1.4"
OID_SECRET_BAG = "1.2.840.113549.1.12.10.1.5"  # noqa: S105 (an OID)
OID_SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
OID_X509_CERT = "1.2.840.113549.1.9.22.1"
OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20"

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_PBMAC1 = "1.2.840.113549.1.5.14"

# PKCS#12 PBES1 (RFC 7292 appendix C): oid -> (name, cipher, key bytes, effective key bits)
_PKCS12_PBE: dict[str, tuple[str, str, int]] = {
    "1.2.840.113549.1.12.1.1": ("pbeWithSHA1And128BitRC4", "rc4", 16),
    "1.2.840.113549.1.12.1.2": ("pbeWithSHA1And40BitRC4", "rc4", 5),
    "1.2.840.113549.1.12.1.3": ("pbeWithSHA1And3-KeyTripleDES-CBC", "3des", 24),
    "1.2.840.113549.1.12.1.4": ("pbeWithSHA1And2-KeyTripleDES-CBC", "3des", 16),
    "1.2.840.113549.1.12.1.5": ("pbeWithSHA1And128BitRC2-CBC", "rc2", 16),
    "1.2.840.113549.1.12.1.6": ("pbeWithSHA1And40BitRC2-CBC", "rc2", 5),
}

# PBES2 encryption schemes: oid -> (name, cipher, key bytes)
_PBES2_CIPHERS: dict[str, tuple[str, str, int]] = {
    "2.16.840.1.101.3.4.1.2": ("AES-128-CBC", "aes", 16),
    "2.16.840.1.101.3.4.1.22": ("AES-192-CBC", "aes", 24),
    "2.16.840.1.101.3.4.1.42": ("AES-256-CBC", "aes", 32),
    "1.2.840.113549.3.7": ("DES-EDE3-CBC", "3des", 24),
}

# HMAC PRFs for PBKDF2 / PBMAC1: oid -> hashlib name
_HMAC_PRFS: dict[str, str] = {
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}

# MAC digests (MacData.mac.digestAlgorithm): oid -> hashlib name
_DIGESTS: dict[str, str] = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}


def _hash_label(name: str) -> str:
    return "HMAC-" + name.upper()


# --- errors -------------------------------------------------------------------------------------
class Pkcs12FormatError(ValueError):
    """Not a well-formed PKCS#12 file."""


class Pkcs12UnsupportedError(ValueError):
    """Well-formed, but uses something we cannot process (named in the message)."""


class Pkcs12PasswordError(ValueError):
    """The password does not verify the MAC or decrypt the contents."""


class IterationLimitError(ValueError):
    def __init__(self, what: str, iterations: int, limit: int) -> None:
        super().__init__(f"{what} uses {iterations:,} iterations (limit {limit:,})")
        self.what = what
        self.iterations = iterations
        self.limit = limit


# --- protection schemes ------------------------------------------------------------------------
@dataclass(frozen=True)
class PbeScheme:
    """A password-based encryption scheme found in the file."""

    name: str  # e.g. "pbeWithSHA1And3-KeyTripleDES-CBC", "PBES2/AES-256-CBC/PBKDF2-HMAC-SHA256"
    iterations: int
    family: str  # "pkcs12" | "pbes2"
    cipher: str  # "3des" | "rc2" | "rc4" | "aes"
    key_len: int
    salt: bytes = field(repr=False)
    iv: bytes = field(repr=False, default=b"")  # PBES2 only
    prf: str = "sha1"  # PBES2 only (hashlib name)
    rc2_bits: int = 0


def _parse_pbe(alg: Tlv, what: str) -> PbeScheme:
    oid, params = der.algorithm(alg, what)
    if oid in _PKCS12_PBE:
        name, cipher, key_len = _PKCS12_PBE[oid]
        if params is None:
            raise DerError(f"{what}: missing PBE parameters")
        items = der.sequence(params, what, 2)
        salt = der.octets(der.expect(items[0], der.TAG_OCTET_STRING, what))
        iterations = der.integer(items[1], what)
        return PbeScheme(name, iterations, "pkcs12", cipher, key_len, salt, rc2_bits=key_len * 8)
    if oid == OID_PBES2:
        if params is None:
            raise DerError(f"{what}: missing PBES2 parameters")
        kdf_alg, enc_alg = der.sequence(params, what, 2)[:2]
        kdf_oid, kdf_params = der.algorithm(kdf_alg, what)
        if kdf_oid != OID_PBKDF2 or kdf_params is None:
            raise Pkcs12UnsupportedError(f"PBES2 key derivation {kdf_oid} (only PBKDF2 is supported)")
        salt, iterations, key_len_opt, prf = _parse_pbkdf2(kdf_params, what)
        enc_oid, enc_params = der.algorithm(enc_alg, what)
        if enc_oid not in _PBES2_CIPHERS:
            raise Pkcs12UnsupportedError(f"PBES2 encryption scheme {enc_oid}")
        cname, cipher, key_len = _PBES2_CIPHERS[enc_oid]
        if enc_params is None:
            raise DerError(f"{what}: missing IV")
        iv = der.octets(der.expect(enc_params, der.TAG_OCTET_STRING, what))
        if key_len_opt is not None and key_len_opt != key_len:
            raise DerError(f"{what}: PBKDF2 key length {key_len_opt} does not fit {cname}")
        name = f"PBES2/{cname}/PBKDF2-{_hash_label(prf)}"
        return PbeScheme(name, iterations, "pbes2", cipher, key_len, salt, iv=iv, prf=prf)
    raise Pkcs12UnsupportedError(f"encryption algorithm {oid}")


def _parse_pbkdf2(params: Tlv, what: str) -> tuple[bytes, int, int | None, str]:
    items = der.sequence(params, what, 2)
    if items[0].tag != der.TAG_OCTET_STRING:
        raise Pkcs12UnsupportedError("PBKDF2 with a non-octet-string salt source")
    salt = der.octets(items[0])
    iterations = der.integer(items[1], what)
    key_len: int | None = None
    prf = "sha1"
    for extra in items[2:]:
        if extra.tag == der.TAG_INTEGER:
            key_len = der.integer(extra, what)
        elif extra.tag == der.TAG_SEQUENCE:
            prf_oid, _ = der.algorithm(extra, what)
            if prf_oid not in _HMAC_PRFS:
                raise Pkcs12UnsupportedError(f"PBKDF2 pseudo-random function {prf_oid}")
            prf = _HMAC_PRFS[prf_oid]
    return salt, iterations, key_len, prf


# --- password encodings and key derivation ------------------------------------------------------
def bmp_password(password: str | None) -> bytes:
    """RFC 7292 B.1: BMPString with a two-byte NUL terminator; no password = zero bytes."""
    if password is None:
        return b""
    return password.encode("utf-16-be") + b"\x00\x00"


def utf8_password(password: str | None) -> bytes:
    """PBES2/PBMAC1 passwords are octet strings (UTF-8); None and "" are the same here."""
    return b"" if password is None else password.encode("utf-8")


def pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, id_byte: int, iterations: int, n: int) -> bytes:
    """RFC 7292 appendix B.2 key derivation."""
    u = hashlib.new(hash_name).digest_size
    v = hashlib.new(hash_name).block_size

    def fill(data: bytes) -> bytes:
        if not data:
            return b""
        length = v * ((len(data) + v - 1) // v)
        return (data * (length // len(data) + 1))[:length]

    d = bytes([id_byte]) * v
    i_buf = bytearray(fill(salt) + fill(password))
    out = bytearray()
    while True:
        a = hashlib.new(hash_name, d + bytes(i_buf)).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(hash_name, a).digest()
        out += a
        if len(out) >= n:
            return bytes(out[:n])
        b_int = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        modulus = 1 << (v * 8)
        for j in range(0, len(i_buf), v):
            block = (int.from_bytes(i_buf[j : j + v], "big") + b_int) % modulus
            i_buf[j : j + v] = block.to_bytes(v, "big")


def _unpad(data: bytes, block: int) -> bytes:
    if not data or len(data) % block:
        raise Pkcs12PasswordError("bad ciphertext length")
    pad = data[-1]
    if not 1 <= pad <= block or data[-pad:] != bytes([pad]) * pad:
        raise Pkcs12PasswordError("bad padding")
    return data[:-pad]


def decrypt(scheme: PbeScheme, password: str | None, data: bytes) -> bytes:
    """Decrypt with a PBE scheme. Wrong passwords usually surface as Pkcs12PasswordError."""
    if scheme.family == "pkcs12":
        pw = bmp_password(password)
        key = pkcs12_kdf("sha1", pw, scheme.salt, 1, scheme.iterations, scheme.key_len)
        if scheme.cipher == "rc4":
            dec = Cipher(ARC4(key), mode=None).decryptor()
            return dec.update(data) + dec.finalize()
        iv = pkcs12_kdf("sha1", pw, scheme.salt, 2, scheme.iterations, 8)
    else:
        key = hashlib.pbkdf2_hmac(
            scheme.prf, utf8_password(password), scheme.salt, scheme.iterations, scheme.key_len
        )
        iv = scheme.iv
    if scheme.cipher == "rc2":
        plain = rc2_cbc_decrypt(key, scheme.rc2_bits, iv, data)
        return _unpad(plain, 8)
    try:
        if scheme.cipher == "aes":
            dec = Cipher(AES(key), modes.CBC(iv)).decryptor()
            block = 16
        else:
            dec = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
            block = 8
        plain = dec.update(data) + dec.finalize()
    except ValueError as exc:  # wrong IV size, ciphertext not whole blocks
        raise DerError(f"cannot decrypt: {exc}") from exc
    return _unpad(plain, block)


# --- structure ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MacInfo:
    algorithm: str  # "HMAC-SHA256" or "PBMAC1/HMAC-SHA256/PBKDF2-HMAC-SHA256"
    iterations: int
    digest: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    hash_name: str = "sha1"
    pbmac1_prf: str = ""  # PBMAC1: PBKDF2 PRF (hashlib name); empty for classic MAC
    pbmac1_key_len: int = 0


@dataclass(frozen=True)
class Container:
    """One ContentInfo of the AuthenticatedSafe."""

    encryption: PbeScheme | None  # None = plain "data"
    content: bytes = field(repr=False)  # SafeContents DER, or the ciphertext


@dataclass(frozen=True)
class Pkcs12Structure:
    auth_safe: bytes = field(repr=False)  # the MACed octets
    mac: MacInfo | None
    containers: list[Container]


def looks_like_pkcs12(top: Tlv) -> bool:
    try:
        items = der.sequence(top, "PFX")
        return (
            len(items) >= 2
            and items[0].tag == der.TAG_INTEGER
            and items[1].tag == der.TAG_SEQUENCE
            and (der.oid(der.sequence(items[1], "authSafe", 1)[0], "authSafe") in (OID_DATA, OID_SIGNED_DATA))
        )
    except DerError:
        return False


def _content_info(tlv: Tlv, what: str) -> tuple[str, Tlv | None]:
    items = der.sequence(tlv, what, 1)
    ctype = der.oid(items[0], what)
    if len(items) < 2:
        return ctype, None
    explicit = der.expect(items[1], der.TAG_CONTEXT_0_CONSTRUCTED, what)
    inner = der.children(explicit)
    if len(inner) != 1:
        raise DerError(f"{what}: bad [0] content")
    return ctype, inner[0]


def read_structure(data: bytes) -> Pkcs12Structure:
    """Parse the PFX outer layers. Raises Pkcs12FormatError / Pkcs12UnsupportedError."""
    try:
        return _read_structure(data)
    except DerError as exc:
        raise Pkcs12FormatError(str(exc)) from exc


def _read_structure(data: bytes) -> Pkcs12Structure:
    top = der.parse_single(data)
    items = der.sequence(top, "PFX", 2)
    version = der.integer(items[0], "PFX version")
    if version != 3:
        raise Pkcs12UnsupportedError(f"PFX version {version} (only version 3 exists)")
    ctype, content = _content_info(items[1], "authSafe")
    if ctype == OID_SIGNED_DATA:
        raise Pkcs12UnsupportedError("public-key integrity mode (signedData authSafe)")
    if ctype != OID_DATA or content is None:
        raise DerError("authSafe is not a data ContentInfo")
    if content.tag not in (der.TAG_OCTET_STRING, der.TAG_OCTET_STRING | 0x20):
        raise DerError("authSafe content is not an OCTET STRING")
    auth_safe = der.octets(content)
    mac = _read_mac(items[2]) if len(items) > 2 else None

    containers: list[Container] = []
    for n, ci in enumerate(der.sequence(der.parse_single(auth_safe), "AuthenticatedSafe")):
        what = f"AuthenticatedSafe[{n}]"
        ctype, content = _content_info(ci, what)
        if ctype == OID_DATA:
            if content is None:
                raise DerError(f"{what}: empty data")
            containers.append(Container(None, der.octets(content)))
        elif ctype == OID_ENCRYPTED_DATA:
            if content is None:
                raise DerError(f"{what}: empty encryptedData")
            ed = der.sequence(content, what, 2)
            eci = der.sequence(ed[1], what, 2)
            scheme = _parse_pbe(eci[1], what)
            if len(eci) < 3 or eci[2].tag_number != 0 or eci[2].tag_class != 0x80:
                raise DerError(f"{what}: no encrypted content")
            containers.append(Container(scheme, der.octets(eci[2])))
        elif ctype == OID_ENVELOPED_DATA:
            raise Pkcs12UnsupportedError("public-key privacy mode (envelopedData container)")
        else:
            raise Pkcs12UnsupportedError(f"container type {ctype}")
    return Pkcs12Structure(auth_safe, mac, containers)


def _read_mac(tlv: Tlv) -> MacInfo:
    items = der.sequence(tlv, "MacData", 2)
    digest_info = der.sequence(items[0], "MacData.mac", 2)
    alg_oid, alg_params = der.algorithm(digest_info[0], "MacData.mac")
    digest = der.octets(der.expect(digest_info[1], der.TAG_OCTET_STRING, "MacData.mac"))
    salt = der.octets(der.expect(items[1], der.TAG_OCTET_STRING, "MacData.macSalt"))
    iterations = der.integer(items[2], "MacData.iterations") if len(items) > 2 else 1
    if alg_oid in _DIGESTS:
        name = _DIGESTS[alg_oid]
        return MacInfo(_hash_label(name), iterations, digest, salt, hash_name=name)
    if alg_oid == OID_PBMAC1 and alg_params is not None:  # RFC 9579
        kdf, scheme = der.sequence(alg_params, "PBMAC1", 2)[:2]
        kdf_oid, kdf_params = der.algorithm(kdf, "PBMAC1")
        if kdf_oid != OID_PBKDF2 or kdf_params is None:
            raise Pkcs12UnsupportedError(f"PBMAC1 key derivation {kdf_oid}")
        psalt, piter, key_len, prf = _parse_pbkdf2(kdf_params, "PBMAC1")
        mac_oid, _ = der.algorithm(scheme, "PBMAC1")
        if mac_oid not in _HMAC_PRFS:
            raise Pkcs12UnsupportedError(f"PBMAC1 MAC algorithm {mac_oid}")
        mac_hash = _HMAC_PRFS[mac_oid]
        name = f"PBMAC1/{_hash_label(mac_hash)}/PBKDF2-{_hash_label(prf)}"
        if key_len is None or not 1 <= key_len <= 64:
            raise DerError("PBMAC1 without a sensible PBKDF2 key length")
        return MacInfo(name, piter, digest, psalt, hash_name=mac_hash, pbmac1_prf=prf, pbmac1_key_len=key_len)
    raise Pkcs12UnsupportedError(f"MAC digest algorithm {alg_oid}")


def mac_matches(structure: Pkcs12Structure, password: str | None) -> bool:
    mac = structure.mac
    if mac is None:
        raise ValueError("no MAC")
    if mac.pbmac1_prf:
        key = hashlib.pbkdf2_hmac(
            mac.pbmac1_prf, utf8_password(password), mac.salt, mac.iterations, mac.pbmac1_key_len
        )
    else:
        size = hashlib.new(mac.hash_name).digest_size
        key = pkcs12_kdf(mac.hash_name, bmp_password(password), mac.salt, 3, mac.iterations, size)
    computed = hmac.new(key, structure.auth_safe, mac.hash_name).digest()
    return hmac.compare_digest(computed, mac.digest)


# --- contents -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyBag:
    pkcs8_der: bytes = field(repr=False)  # decrypted PrivateKeyInfo
    encryption: PbeScheme | None
    friendly_name: str | None = None


@dataclass(frozen=True)
class CertBag:
    der: bytes = field(repr=False)
    friendly_name: str | None = None


@dataclass
class Pkcs12Contents:
    keys: list[KeyBag] = field(default_factory=list)
    certs: list[CertBag] = field(default_factory=list)
    key_schemes: list[PbeScheme] = field(default_factory=list)  # one per shrouded key bag
    cert_schemes: list[PbeScheme | None] = field(default_factory=list)  # container of each cert bag
    plain_keys: int = 0
    other_bags: list[str] = field(default_factory=list)  # names of crl/secret/unknown bags (ignored)


LimitCheck = Callable[[str, int], None]


def open_contents(structure: Pkcs12Structure, password: str | None, check: LimitCheck) -> Pkcs12Contents:
    """Decrypt containers and shrouded keys with exactly ``password``.

    ``check(what, iterations)`` is called before every derivation; it raises to stop.
    Raises Pkcs12PasswordError, Pkcs12FormatError, Pkcs12UnsupportedError.
    """
    contents = Pkcs12Contents()
    for n, container in enumerate(structure.containers):
        safe = container.content
        scheme = container.encryption
        if scheme is not None:
            check(f"certificate container {n} ({scheme.name})", scheme.iterations)
            try:
                safe = decrypt(scheme, password, container.content)
                der.parse_single(safe)
            except (Pkcs12PasswordError, DerError) as exc:
                raise Pkcs12PasswordError(f"container {n} does not decrypt") from exc
        try:
            _read_safe_contents(der.parse_single(safe), password, check, contents, scheme, 0)
        except DerError as exc:
            raise Pkcs12FormatError(f"container {n}: {exc}") from exc
    return contents


def _attr_friendly_name(bag_items: list[Tlv]) -> str | None:
    if len(bag_items) < 3 or bag_items[2].tag != der.TAG_SET:
        return None
    for attr in der.children(bag_items[2]):
        parts = der.sequence(attr, "attribute", 2)
        if der.oid(parts[0], "attribute") == OID_FRIENDLY_NAME and parts[1].tag == der.TAG_SET:
            values = der.children(parts[1])
            if values and values[0].tag == 0x1E:  # BMPString
                return values[0].value.decode("utf-16-be", errors="replace")
    return None


def _read_safe_contents(
    top: Tlv,
    password: str | None,
    check: LimitCheck,
    out: Pkcs12Contents,
    container: PbeScheme | None,
    depth: int,
) -> None:
    if depth > 4:
        raise DerError("safeContentsBag nesting too deep")
    for bag in der.sequence(top, "SafeContents"):
        items = der.sequence(bag, "SafeBag", 2)
        bag_id = der.oid(items[0], "SafeBag")
        value_wrapper = der.expect(items[1], der.TAG_CONTEXT_0_CONSTRUCTED, "SafeBag value")
        value = der.children(value_wrapper)
        if len(value) != 1:
            raise DerError("SafeBag value")
        name = _attr_friendly_name(items)
        if bag_id == OID_KEY_BAG:
            out.keys.append(KeyBag(value[0].encoded, None, name))
            out.plain_keys += 1
        elif bag_id == OID_SHROUDED_KEY_BAG:
            epki = der.sequence(value[0], "EncryptedPrivateKeyInfo", 2)
            scheme = _parse_pbe(epki[0], "shrouded key")
            out.key_schemes.append(scheme)
            check(f"private key ({scheme.name})", scheme.iterations)
            ciphertext = der.octets(der.expect(epki[1], der.TAG_OCTET_STRING, "EncryptedPrivateKeyInfo"))
            try:
                plain = decrypt(scheme, password, ciphertext)
                der.parse_single(plain)
            except (Pkcs12PasswordError, DerError) as exc:
                raise Pkcs12PasswordError("private key does not decrypt") from exc
            out.keys.append(KeyBag(plain, scheme, name))
        elif bag_id == OID_CERT_BAG:
            cert_bag = der.sequence(value[0], "CertBag", 2)
            cert_type = der.oid(cert_bag[0], "CertBag")
            if cert_type != OID_X509_CERT:
                out.other_bags.append(f"certificate type {cert_type}")
                continue
            inner = der.children(der.expect(cert_bag[1], der.TAG_CONTEXT_0_CONSTRUCTED, "CertBag value"))
            if len(inner) != 1:
                raise DerError("CertBag value")
            out.certs.append(CertBag(der.octets(inner[0]), name))
            out.cert_schemes.append(container)
        elif bag_id == OID_SAFE_CONTENTS_BAG:
            _read_safe_contents(value[0], password, check, out, container, depth + 1)
        elif bag_id == OID_CRL_BAG:
            out.other_bags.append("CRL")
        elif bag_id == OID_SECRET_BAG:
            out.other_bags.append("secret")
        else:
            out.other_bags.append(f"bag {bag_id}")
