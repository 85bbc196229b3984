"""X.509 certificate → the inventory record ``Get-WinCertInventory`` emits, as Windows shows it.

One record per certificate, keys in this order (the same order and formats as the
``[pscustomobject]`` in ``worker/powershell/Inventory.ps1``):

=================  ==========================================================================
``Thumbprint``     SHA-1 of the DER encoding, upper-case hex (``X509Certificate2.Thumbprint``)
``Subject``        ``X500DistinguishedName.Name`` style, see :func:`format_name`
``Issuer``         same style
``SerialNumber``   the serial INTEGER's content octets as upper-case hex, big-endian, exactly as
                   encoded (a leading ``00`` stays; ``X509Certificate2.SerialNumber``)
``NotBefore``      UTC, ``yyyy-MM-ddTHH:mm:ssZ`` (seconds precision)
``NotAfter``       same
``HasPrivateKey``  bool
``FriendlyName``   str, ``""`` when none
``KeyAlgorithm``   ``RSA`` | ``ECDSA`` | ``DSA`` | ``Ed25519`` | ``Ed448`` | the SPKI algorithm OID
``KeySize``        bits: RSA modulus, EC curve (P-256 → 256), DSA p, Ed25519 256, Ed448 456;
                   ``None`` when the key cannot be loaded or the algorithm is not listed
``Sans``           list of ``{"Type": dns|ip|email|upn|uri|dn|other, "Value": str}``
``RawData``        base64 of the DER encoding
=================  ==========================================================================

Subject alternative names are decoded from the extension's own DER (OID 2.5.29.17) by
:func:`decode_general_names`, never from a display text (Windows' ``Format()`` is localized).
If that extension cannot be decoded the certificate is still reported, with ``Sans`` empty and
a warning — skipping it would make the inventory consumer believe the certificate was removed.
The PowerShell does the same.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from simulator.windows.der import (
    CONTEXT,
    TAG_INTEGER,
    TAG_OID,
    TAG_SEQUENCE,
    TAG_UTF8_STRING,
    DerError,
    Element,
    decode_oid,
    read_element,
    read_single,
)

OID_SAN = "2.5.29.17"
OID_UPN = "1.3.6.1.4.1.311.20.2.3"

#: SubjectPublicKeyInfo algorithm OID → the ``KeyAlgorithm`` text.
KEY_ALGORITHMS: dict[str, str] = {
    "1.2.840.113549.1.1.1": "RSA",
    "1.2.840.10045.2.1": "ECDSA",
    "1.2.840.10040.4.1": "DSA",
    "1.3.101.112": "Ed25519",
    "1.3.101.113": "Ed448",
}

#: Attribute type OID → the short name CryptoAPI's ``CertNameToStr(CERT_X500_NAME_STR)`` prints
#: (the key table documented for ``CertStrToName``; first name wins). Others print ``OID.<dotted>``.
X500_SHORT_NAMES: dict[str, str] = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "S",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "T",
    "2.5.4.13": "Description",
    "2.5.4.17": "PostalCode",
    "2.5.4.18": "POBox",
    "2.5.4.20": "Phone",
    "2.5.4.24": "X21Address",
    "2.5.4.42": "G",
    "2.5.4.43": "I",
    "2.5.4.46": "dnQualifier",
    "1.2.840.113549.1.9.1": "E",
    "0.9.2342.19200300.100.1.25": "DC",
}

# Characters that make CertNameToStr put a value in double quotes (Microsoft's CertNameToStr
# documentation; confirmed by Wine's crypt32 conformance tests run on Windows).
_QUOTE_CHARS = frozenset(',+="\n<>#;')
_ASCII_SPACE = frozenset(" \t\n\v\f\r")

# Universal string tags in a Name and how CryptoAPI turns their octets into text.
# Numeric, Printable, Videotex, IA5, Graphic, Visible, General: octets copied as 8-bit characters.
_LATIN1_TAGS = frozenset({18, 19, 21, 22, 25, 26, 27})
_T61 = 20
_UNIVERSAL_STRING = 28
_BMP_STRING = 30


def thumbprint(der: bytes) -> str:
    """``X509Certificate2.Thumbprint``: SHA-1 of the DER encoding as upper-case hex."""
    return hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - a fingerprint, as Windows uses


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _decode_name_value(value: Element) -> str:
    """The text CryptoAPI shows for one attribute value (``CertRDNValueToStr``)."""
    content = value.content
    if value.tag_class == 0 and not value.constructed:
        if value.tag_number == TAG_UTF8_STRING:
            return content.decode("utf-8", errors="replace")
        if value.tag_number == _T61:
            # CryptoAPI decodes T61String as UTF-8 first, then as 8-bit characters
            # (CRYPT_UNICODE_NAME_DECODE_DISABLE_IE4_UTF8_FLAG documentation).
            try:
                return content.decode("utf-8")
            except UnicodeDecodeError:
                return content.decode("latin-1")
        if value.tag_number in _LATIN1_TAGS:
            return content.decode("latin-1")
        if value.tag_number == _BMP_STRING:
            return content.decode("utf-16-be", errors="replace")
        if value.tag_number == _UNIVERSAL_STRING:
            return content.decode("utf-32-be", errors="replace")
    # Not a string type (BIT STRING, OCTET STRING, ...): "#" + the encoded value in hex, never
    # quoted (the RFC 4514 hex form; Windows' exact rendering of these is unverified).
    return "#" + _hex(value.raw)


def _is_hex_form(value: Element) -> bool:
    string_tags = _LATIN1_TAGS | {TAG_UTF8_STRING, _T61, _BMP_STRING, _UNIVERSAL_STRING}
    return value.tag_class != 0 or value.constructed or value.tag_number not in string_tags


def _quote(text: str) -> str:
    edges = text[:1] + text[-1:]
    if text == "" or any(c in _ASCII_SPACE for c in edges) or any(c in _QUOTE_CHARS for c in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_name(name_der: bytes) -> str:
    """A DER ``Name`` as ``X500DistinguishedName.Name`` shows it.

    That is ``CertNameToStr(CERT_X500_NAME_STR | CERT_NAME_STR_REVERSE_FLAG)``: most specific RDN
    first, RDNs joined by ``", "``, attributes of a multi-valued RDN joined by ``" + "``, short
    names from :data:`X500_SHORT_NAMES` else ``OID.<dotted>``; a non-string value prints as
    ``#`` + hex of its encoding; a string value is put in double quotes
    when it is empty, starts or ends with white space or contains any of ``, + = " < > # ;`` or
    a newline, and inner double quotes are doubled. Example: ``CN="a, b", O=Example, C=US``.

    Raises:
        DerError: the Name is not a SEQUENCE of SETs of (OID, value) SEQUENCEs.
    """
    name = read_single(name_der)
    if not name.is_universal(TAG_SEQUENCE):
        raise DerError("DER: a Name must be a SEQUENCE")
    rdns: list[str] = []
    for rdn in name.children():
        parts: list[str] = []
        for atv in rdn.children():
            items = atv.children()
            if len(items) != 2 or not items[0].is_universal(TAG_OID):
                raise DerError("DER: malformed attribute in a Name")
            oid = decode_oid(items[0].content)
            label = X500_SHORT_NAMES.get(oid, f"OID.{oid}")
            text = _decode_name_value(items[1])
            parts.append(f"{label}={text if _is_hex_form(items[1]) else _quote(text)}")
        rdns.append(" + ".join(parts))
    return ", ".join(reversed(rdns))


def format_ip(octets: bytes) -> str | None:
    """An iPAddress SAN's text: dotted IPv4, or RFC 5952 IPv6 (lower-case hex, the longest run
    of two or more zero groups, the first on a tie, as ``::``). ``None`` for other lengths.

    Deliberately not the platform formatter, so Python and .NET print the same text.
    """
    if len(octets) == 4:
        return ".".join(str(b) for b in octets)
    if len(octets) != 16:
        return None
    groups = [octets[i] * 256 + octets[i + 1] for i in range(0, 16, 2)]
    best_start, best_len, run_start = -1, 0, -1
    for i, group in enumerate([*groups, 1]):
        if group == 0 and i < 8:
            if run_start < 0:
                run_start = i
        elif run_start >= 0:
            if i - run_start > best_len:
                best_start, best_len = run_start, i - run_start
            run_start = -1
    text = [f"{g:x}" for g in groups]
    if best_len < 2:
        return ":".join(text)
    return ":".join(text[:best_start]) + "::" + ":".join(text[best_start + best_len :])


_GENERAL_NAME_OTHER = {3: "x400Address", 5: "ediPartyName"}


def decode_general_names(ext_value: bytes) -> list[dict[str, str]]:
    """Decode a SubjectAltName extension value (``GeneralNames``) into structured entries.

    ``[0]`` otherName: UPN (1.3.6.1.4.1.311.20.2.3 holding a UTF8String) → ``upn``; any other →
    ``other`` with ``"<type-id OID>=<hex of the value's encoding>"``. ``[1]`` → ``email``,
    ``[2]`` → ``dns``, ``[6]`` → ``uri`` (octets as UTF-8), ``[4]`` → ``dn`` (as
    :func:`format_name`), ``[7]`` → ``ip`` (:func:`format_ip`; other lengths →
    ``other`` ``"iPAddress=<hex>"``), ``[8]`` → ``other`` ``"registeredID=<OID>"``, ``[3]``/``[5]``
    → ``other`` ``"x400Address=<hex>"`` / ``"ediPartyName=<hex>"`` (hex of the content).

    Raises:
        DerError: any malformed part; the caller reports the certificate with no SANs.
    """
    outer = read_single(ext_value)
    if not outer.is_universal(TAG_SEQUENCE):
        raise DerError("DER: GeneralNames must be a SEQUENCE")
    result: list[dict[str, str]] = []
    for name in outer.children():
        if name.tag_class != CONTEXT or name.tag_number > 8:
            raise DerError(f"DER: unsupported GeneralName tag {name.tag_number}")
        tag = name.tag_number
        content = name.content
        if tag == 0:
            items = name.children()
            if len(items) != 2 or not items[0].is_universal(TAG_OID) or items[1].tag_class != CONTEXT \
                    or items[1].tag_number != 0:
                raise DerError("DER: malformed otherName")
            type_id = decode_oid(items[0].content)
            inner = read_single(items[1].content)
            if type_id == OID_UPN and inner.is_universal(TAG_UTF8_STRING) and not inner.constructed:
                result.append({"Type": "upn", "Value": inner.content.decode("utf-8", errors="replace")})
            else:
                result.append({"Type": "other", "Value": f"{type_id}={_hex(inner.raw)}"})
        elif tag in (1, 2, 6):
            kind = {1: "email", 2: "dns", 6: "uri"}[tag]
            result.append({"Type": kind, "Value": content.decode("utf-8", errors="replace")})
        elif tag == 4:
            inner = read_single(content)
            result.append({"Type": "dn", "Value": format_name(inner.raw)})
        elif tag == 7:
            text = format_ip(content)
            if text is None:
                result.append({"Type": "other", "Value": f"iPAddress={_hex(content)}"})
            else:
                result.append({"Type": "ip", "Value": text})
        elif tag == 8:
            result.append({"Type": "other", "Value": f"registeredID={decode_oid(content)}"})
        else:
            result.append({"Type": "other", "Value": f"{_GENERAL_NAME_OTHER[tag]}={_hex(content)}"})
    return result


class _TbsParts:
    """The parts of a TBSCertificate inventory reads, located with the DER reader."""

    def __init__(self, der: bytes) -> None:
        cert = read_single(der)
        if not cert.is_universal(TAG_SEQUENCE):
            raise DerError("DER: a certificate must be a SEQUENCE")
        tbs = read_element(der, cert.content_start, cert.end)
        fields = tbs.children()
        index = 0
        if fields and fields[0].tag_class == CONTEXT and fields[0].tag_number == 0:
            index = 1  # [0] EXPLICIT version
        if len(fields) < index + 6 or not fields[index].is_universal(TAG_INTEGER):
            raise DerError("DER: malformed TBSCertificate")
        self.serial = fields[index].content
        self.issuer = fields[index + 2].raw
        self.subject = fields[index + 4].raw
        spki = fields[index + 5].children()
        algorithm = spki[0].children() if spki else []
        if not algorithm or not algorithm[0].is_universal(TAG_OID):
            raise DerError("DER: malformed SubjectPublicKeyInfo")
        self.key_oid = decode_oid(algorithm[0].content)
        self.extensions: dict[str, bytes] = {}
        for item in fields[index + 6 :]:
            if item.tag_class == CONTEXT and item.tag_number == 3:
                for ext in read_single(item.content).children():
                    parts = ext.children()
                    if not parts or not parts[0].is_universal(TAG_OID):
                        raise DerError("DER: malformed Extension")
                    # First occurrence wins, as X509Certificate2.Extensions lookups by OID do.
                    self.extensions.setdefault(decode_oid(parts[0].content), parts[-1].content)


def _utc_text(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
    )


def _key_size(cert: x509.Certificate, key_oid: str) -> int | None:
    if key_oid == "1.3.101.112":
        return 256
    if key_oid == "1.3.101.113":
        return 456
    if key_oid not in KEY_ALGORITHMS:
        return None
    try:
        key = cert.public_key()
    except Exception:  # unsupported curve, explicit EC parameters, bad encoding
        return None
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        return int(key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return int(key.curve.key_size)
    return None


@lru_cache(maxsize=16384)
def _der_fields(der: bytes) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[tuple[str, str], ...], ...],
                                     tuple[str, ...]]:
    """Everything in a record that depends on the DER bytes only (cached: stores are re-listed often)."""
    cert = x509.load_der_x509_certificate(der)
    parts = _TbsParts(der)
    warnings: list[str] = []
    sans: list[dict[str, str]] = []
    san_value = parts.extensions.get(OID_SAN)
    if san_value is not None:
        try:
            sans = decode_general_names(san_value)
        except (DerError, ValueError) as exc:
            warnings.append(
                f"Certificate {thumbprint(der)}: the subject alternative name extension could not be"
                f" decoded ({exc}); reported without SANs."
            )
    head = (
        ("Thumbprint", thumbprint(der)),
        ("Subject", format_name(parts.subject)),
        ("Issuer", format_name(parts.issuer)),
        ("SerialNumber", _hex(parts.serial)),
        ("NotBefore", _utc_text(cert.not_valid_before_utc)),
        ("NotAfter", _utc_text(cert.not_valid_after_utc)),
        ("KeyAlgorithm", KEY_ALGORITHMS.get(parts.key_oid, parts.key_oid)),
        ("KeySize", _key_size(cert, parts.key_oid)),
    )
    return head, tuple(tuple(s.items()) for s in sans), tuple(warnings)


def inventory_record(
    der: bytes, *, has_private_key: bool, friendly_name: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """The inventory record for one certificate, plus warnings to emit alongside it.

    Args:
        der: the certificate's DER encoding.
        has_private_key: whether the store entry has a private key.
        friendly_name: the entry's friendly name (``""`` when none).

    Returns:
        ``(record, warnings)``: ``record`` has exactly the keys in the module docstring, in that
        order; ``warnings`` is non-empty when the SAN extension could not be decoded.

    Raises:
        ValueError: the certificate cannot be inventoried at all (unreadable validity, names or
            serial); the command skips it with "Skipped certificate <thumbprint>: <reason>".
    """
    head, sans, warnings = _der_fields(der)
    fields = dict(head)
    record: dict[str, Any] = {
        "Thumbprint": fields["Thumbprint"],
        "Subject": fields["Subject"],
        "Issuer": fields["Issuer"],
        "SerialNumber": fields["SerialNumber"],
        "NotBefore": fields["NotBefore"],
        "NotAfter": fields["NotAfter"],
        "HasPrivateKey": bool(has_private_key),
        "FriendlyName": friendly_name or "",
        "KeyAlgorithm": fields["KeyAlgorithm"],
        "KeySize": fields["KeySize"],
        "Sans": [dict(s) for s in sans],
        "RawData": base64.b64encode(der).decode("ascii"),
    }
    return record, list(warnings)
