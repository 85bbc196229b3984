"""Reading certificate data the way a Windows host does for ``Import-WinCertCertificate``.

The input is a PKCS#12 (PFX) blob, else one certificate (DER, or PEM / bare base64 text, which
``X509Certificate2`` also accepts). Anything else fails as ``X509Certificate2`` fails on it.

PKCS#12 semantics modelled on ``PFXImportCertStore`` (what ``X509Certificate2`` and
``certutil -importPFX`` call):

* **Password.** ``None`` (``-Password`` omitted) and ``""`` (an empty SecureString) are passed
  on as different values, exactly like the PowerShell does (``$null`` vs an empty string), but
  both decrypt the same files: a PKCS#12 written without a password (no MAC, plain bags), one
  whose MAC and bags use the empty password (``openssl pkcs12 -passout pass:``) and one written
  by ``cryptography`` with ``NoEncryption`` all open with either. That is what ``cryptography``
  (OpenSSL's ``PKCS12_parse``, which retries NULL and "" for an empty password) does, and in
  practice what crypt32 does too, although the ``PFXImportCertStore`` documentation says the
  value "must be exactly the same" as at export. A non-empty password never opens a file
  protected with the empty or no password unless the file has neither MAC nor encryption.
* **Errors.** A wrong password and an encryption scheme this Windows build cannot read give the
  same Windows text, ``The specified network password is not correct.`` (ERROR_INVALID_PASSWORD,
  0x80070056): Windows does not tell the two apart, so neither do we.
* **Build limits.** PBES2 (PBKDF2 + AES, OpenSSL 3's and Windows Server 2019's default) is
  readable only from build 17763 (Windows Server 2019 / Windows 10 1809) on; Windows Server 2016
  (14393) and older read only the PKCS#12 PBE schemes (3DES, RC2). Iteration counts (MAC or key
  derivation) above 600,000 are refused.
* **Primary certificate.** ``X509Certificate2(byte[], ...)`` picks the first certificate that
  has a private key, else the first certificate; :attr:`ReadResult.primary` is that one.
* **Key provider attribute.** A key bag may carry the Microsoft CSP-name attribute
  (1.3.6.1.4.1.311.17.1); Windows creates the key in that provider when no other is requested.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
import warnings
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

PASSWORD_ERROR = "The specified network password is not correct."  # noqa: S105 - Windows text
NOT_FOUND_ERROR = "Cannot find the requested object."
MAX_ITERATIONS = 600_000
PBES2_MIN_BUILD = 17763

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
OID_KEY_BAG = "1.2.840.113549.1.12.10.1.1"
OID_CSP_NAME = "1.3.6.1.4.1.311.17.1"
_PBE_PREFIXES = ("1.2.840.113549.1.12.1.", "1.2.840.113549.1.5.")

_PEM_CERT = re.compile(
    rb"-----BEGIN (?:X509 )?CERTIFICATE-----(.*?)-----END (?:X509 )?CERTIFICATE-----", re.DOTALL
)


class PfxImportError(ValueError):
    """The host cannot read the data; ``str()`` is the Windows message."""


@dataclass(frozen=True)
class ReadCertificate:
    """One certificate of the input, with its private key if the input carried one."""

    der: bytes
    private_key: PrivateKeyTypes | None = None
    friendly_name: str = ""
    thumbprint: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.der).hexdigest().upper()  # noqa: S324 - Windows thumbprint
        object.__setattr__(self, "thumbprint", digest)


@dataclass(frozen=True)
class PfxProfile:
    """What the PKCS#12 envelope says about itself (readable without the password)."""

    pbes2: bool
    max_iterations: int
    csp_name: str | None


@dataclass(frozen=True)
class ReadResult:
    """The certificates of the input in file order; ``primary`` as ``X509Certificate2`` picks it."""

    kind: str  # "pkcs12" | "certificate"
    certificates: tuple[ReadCertificate, ...]
    csp_name: str | None = None

    @property
    def primary(self) -> ReadCertificate:
        return next((c for c in self.certificates if c.private_key is not None), self.certificates[0])

    def find(self, thumbprint: str) -> ReadCertificate | None:
        return next((c for c in self.certificates if c.thumbprint == thumbprint.upper()), None)


# -- a tolerant BER walker (PKCS#12 files from Windows and Java use indefinite lengths) --------


@dataclass(frozen=True)
class _Tlv:
    cls: int
    constructed: bool
    number: int
    content: bytes  # for constructed OCTET STRINGs: the concatenated segments
    children: tuple[_Tlv, ...]


class _BerError(ValueError):
    pass


def _read(data: bytes, pos: int, end: int, depth: int = 0) -> tuple[_Tlv, int]:
    if depth > 32 or pos + 2 > end:
        raise _BerError("truncated or too deep")
    first = data[pos]
    pos += 1
    number = first & 0x1F
    if number == 0x1F:
        number = 0
        while True:
            if pos >= end:
                raise _BerError("truncated tag")
            octet = data[pos]
            pos += 1
            number = (number << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
    if pos >= end:
        raise _BerError("truncated length")
    length_octet = data[pos]
    pos += 1
    constructed = bool(first & 0x20)
    if length_octet == 0x80:
        if not constructed:
            raise _BerError("indefinite length on a primitive")
        children = []
        while True:
            if pos + 2 > end:
                raise _BerError("missing end-of-contents")
            if data[pos] == 0 and data[pos + 1] == 0:
                pos += 2
                break
            child, pos = _read(data, pos, end, depth + 1)
            children.append(child)
        return _make(first, number, tuple(children), b""), pos
    if length_octet & 0x80:
        count = length_octet & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise _BerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = length_octet
    if pos + length > end:
        raise _BerError("length exceeds data")
    stop = pos + length
    if not constructed:
        return _make(first, number, (), data[pos:stop]), stop
    children = []
    inner = pos
    while inner < stop:
        child, inner = _read(data, inner, stop, depth + 1)
        children.append(child)
    return _make(first, number, tuple(children), b""), stop


def _make(first: int, number: int, children: tuple[_Tlv, ...], content: bytes) -> _Tlv:
    cls = first >> 6
    if children and cls == 0 and number == 4:  # constructed OCTET STRING: join the segments
        content = b"".join(c.content for c in children)
    return _Tlv(cls, bool(first & 0x20), number, content, children)


def _parse(data: bytes) -> _Tlv:
    tlv, end = _read(data, 0, len(data))
    if end != len(data):
        raise _BerError("trailing data")
    return tlv


def _oid(tlv: _Tlv) -> str:
    if tlv.cls != 0 or tlv.number != 6 or not tlv.content:
        raise _BerError("not an OID")
    arcs: list[int] = []
    value = 0
    for octet in tlv.content:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _int(tlv: _Tlv) -> int:
    if tlv.cls != 0 or tlv.number != 2:
        raise _BerError("not an INTEGER")
    return int.from_bytes(tlv.content, "big", signed=True)


def _explicit0(tlv: _Tlv) -> _Tlv:
    if tlv.cls != 2 or tlv.number != 0 or len(tlv.children) != 1:
        raise _BerError("expected [0] EXPLICIT")
    return tlv.children[0]


def _octets(tlv: _Tlv) -> bytes:
    if tlv.cls != 0 or tlv.number != 4:
        raise _BerError("not an OCTET STRING")
    return tlv.content


def _algorithm(alg: _Tlv) -> tuple[bool, int]:
    """(is PBES2, iteration count) of a password-based encryption AlgorithmIdentifier."""
    oid = _oid(alg.children[0])
    params = alg.children[1] if len(alg.children) > 1 else None
    if oid == OID_PBES2 and params is not None:
        kdf = params.children[0]
        if _oid(kdf.children[0]) == OID_PBKDF2:
            return True, _int(kdf.children[1].children[1])
        return True, 0
    if oid.startswith(_PBE_PREFIXES) and params is not None and len(params.children) >= 2:
        return False, _int(params.children[1])
    return False, 0


def inspect_pkcs12(data: bytes) -> PfxProfile | None:
    """The envelope of a PKCS#12 blob (as ``PFXIsPFXBlob`` recognises one), or None if ``data``
    is not PKCS#12. Unreadable inner parts are ignored (decryption will judge them)."""
    try:
        pfx = _parse(data)
        if pfx.cls != 0 or pfx.number != 16 or len(pfx.children) < 2 or _int(pfx.children[0]) != 3:
            return None
        auth_safe = pfx.children[1]
        if _oid(auth_safe.children[0]) != OID_DATA and auth_safe.children[0].number == 6:
            return PfxProfile(False, 0, None)  # public-key integrity mode: nothing to inspect
    except (_BerError, IndexError):
        return None
    pbes2 = False
    iterations = 0
    csp_name: str | None = None
    try:
        if len(pfx.children) > 2:
            mac = pfx.children[2]
            iterations = _int(mac.children[2]) if len(mac.children) > 2 else 1
        safes = _parse(_octets(_explicit0(auth_safe.children[1])))
        for info in safes.children:
            content_type = _oid(info.children[0])
            if content_type == OID_ENCRYPTED_DATA:
                encrypted = _explicit0(info.children[1])
                is_pbes2, count = _algorithm(encrypted.children[1].children[1])
                pbes2 = pbes2 or is_pbes2
                iterations = max(iterations, count)
                continue
            if content_type != OID_DATA:
                continue
            for bag in _parse(_octets(_explicit0(info.children[1]))).children:
                bag_id = _oid(bag.children[0])
                if bag_id == OID_SHROUDED_KEY_BAG:
                    is_pbes2, count = _algorithm(_explicit0(bag.children[1]).children[0])
                    pbes2 = pbes2 or is_pbes2
                    iterations = max(iterations, count)
                if bag_id in (OID_SHROUDED_KEY_BAG, OID_KEY_BAG) and len(bag.children) > 2:
                    for attribute in bag.children[2].children:
                        if _oid(attribute.children[0]) == OID_CSP_NAME and csp_name is None:
                            value = attribute.children[1].children[0].content
                            csp_name = value.decode("utf-16-be", "replace").rstrip("\x00")
    except (_BerError, IndexError, ValueError):
        pass
    return PfxProfile(pbes2, iterations, csp_name)


# -- reading -------------------------------------------------------------------------------


def _read_pkcs12(data: bytes, password: str | None, os_build: int, profile: PfxProfile) -> ReadResult:
    if profile.pbes2 and os_build < PBES2_MIN_BUILD:
        raise PfxImportError(PASSWORD_ERROR)
    if profile.max_iterations > MAX_ITERATIONS:
        raise PfxImportError(PASSWORD_ERROR)
    secret = None if password is None else password.encode("utf-8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "falling back to parsing as BER"
            bundle = pkcs12.load_pkcs12(data, secret)
    except Exception as exc:
        raise PfxImportError(PASSWORD_ERROR) from exc
    entries = ([bundle.cert] if bundle.cert is not None else []) + list(bundle.additional_certs)
    if not entries:
        raise PfxImportError(NOT_FOUND_ERROR)
    certificates = []
    for position, entry in enumerate(entries):
        key = bundle.key if position == 0 and bundle.cert is not None else None
        certificates.append(ReadCertificate(
            entry.certificate.public_bytes(serialization.Encoding.DER),
            key,
            (entry.friendly_name or b"").decode("utf-8", "replace"),
        ))
    return ReadResult("pkcs12", tuple(certificates), profile.csp_name)


def _read_certificate(data: bytes) -> ReadResult:
    candidates = [data]
    match = _PEM_CERT.search(data)
    text = match.group(1) if match else data
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(b"".join(text.split()), validate=True))
    for candidate in candidates:
        try:
            cert = x509.load_der_x509_certificate(candidate)
        except ValueError:
            continue
        return ReadResult("certificate", (ReadCertificate(cert.public_bytes(serialization.Encoding.DER)),))
    raise PfxImportError(NOT_FOUND_ERROR)


def read_certificate_data(data: bytes, password: str | None, os_build: int) -> ReadResult:
    """Read ``data`` as PKCS#12 (with ``password``), else as one certificate.

    Raises:
        PfxImportError: with the Windows message (see the module docstring).
    """
    profile = inspect_pkcs12(data)
    if profile is not None:
        return _read_pkcs12(data, password, os_build, profile)
    return _read_certificate(data)
