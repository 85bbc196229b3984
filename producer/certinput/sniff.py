"""Sniff and normalise certificate input: base64 text, PEM, BOMs, UTF-16, raw binary."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from producer.codes import ResultCode

from .errors import CertificateInputError

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9][A-Z0-9 #]*)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_WHITESPACE = re.compile(r"\s+")

CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "X.509 CERTIFICATE"})
PKCS7_LABELS = frozenset({"PKCS7", "PKCS #7 SIGNED DATA", "CMS"})
PKCS12_LABELS = frozenset({"PKCS12", "PKCS #12", "PFX"})
KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)


@dataclass(frozen=True)
class PemBlock:
    label: str
    der: bytes = field(repr=False)
    text: str = field(repr=False)  # the whole block, armour included (for encrypted legacy keys)
    has_headers: bool = False  # "Proc-Type: 4,ENCRYPTED" style headers


@dataclass(frozen=True)
class Decoded:
    """Normalised input: either one binary (DER/BER) object, or PEM blocks."""

    der: bytes | None = field(repr=False, default=None)
    blocks: tuple[PemBlock, ...] = ()
    from_text: bool = False  # the binary came from base64/PEM text (not raw bytes)


def describe_prefix(data: bytes) -> str:
    """Say what the first bytes look like, without dumping the input."""
    head = data[:16]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        text = head.decode("ascii").replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
        return f"starts with '{text}'"
    return f"starts with bytes {data[:8].hex(' ')}"


def _fail(message: str) -> CertificateInputError:
    return CertificateInputError(ResultCode.INVALID_CERTIFICATE_DATA, message)


def _der_extent(data: bytes) -> int | None:
    """If ``data`` starts with a SEQUENCE header, the total length it claims (None: indefinite/bad)."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    if first == 0x80:
        return -1  # indefinite (BER)
    count = first & 0x7F
    if count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _as_binary(data: bytes) -> bytes | None:
    """Return the DER object if ``data`` is raw DER/BER (trailing NUL/whitespace dropped)."""
    extent = _der_extent(data)
    if extent is None:
        return None
    if extent == -1:
        return data
    if extent > len(data):
        return None
    rest = data[extent:]
    if rest.strip(b"\x00 \t\r\n"):
        return None
    return data[:extent]


def _to_text(data: bytes) -> str | None:
    """Decode text input (UTF-8 with/without BOM, UTF-16 LE/BE with/without BOM); None if binary."""
    try:
        if data.startswith(b"\xef\xbb\xbf"):
            text = data[3:].decode("utf-8")
        elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            sample = data[:256]
            even, odd = sample[0::2], sample[1::2]
            if len(data) >= 4 and len(data) % 2 == 0 and not any(odd) and all(even):
                text = data.decode("utf-16-le")
            elif len(data) >= 4 and len(data) % 2 == 0 and not any(even) and all(odd):
                text = data.decode("utf-16-be")
            else:
                text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\r\n\f\v\x00" for c in text):
        return None
    return text


def _b64(text: str, what: str) -> bytes:
    compact = _WHITESPACE.sub("", text)
    if not _B64_CHARS.fullmatch(compact):
        raise _fail(f"{what} is not valid base64")
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _fail(f"{what} is not valid base64 ({exc})") from exc


def _pem_blocks(text: str) -> tuple[PemBlock, ...]:
    blocks: list[PemBlock] = []
    for m in _PEM_BLOCK.finditer(text):
        label = m.group(1)
        body = m.group(2).replace("\r\n", "\n").replace("\r", "\n")
        has_headers = ":" in body.split("\n", 1)[0]  # RFC 1421 headers, e.g. "Proc-Type: 4,ENCRYPTED"
        der = b"" if has_headers else _b64(body, f"the PEM block {label!r}")
        blocks.append(PemBlock(label, der, m.group(0), has_headers))
    return tuple(blocks)


def decode(data: bytes | str, _nested: bool = False) -> Decoded:
    """Sniff ``data``; raise CertificateInputError(invalid_certificate_data) if unrecognisable."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if isinstance(data, str) and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip(b"\x00 \t\r\n"):
        raise _fail("the certificate input is empty")
    binary = _as_binary(raw)
    if binary is not None:
        return Decoded(der=binary)
    extent = _der_extent(raw)
    if extent is not None and extent > len(raw):
        raise _fail(f"the certificate input looks like DER but is truncated: {len(raw)} of {extent} bytes")
    text = _to_text(raw)
    if text is None:
        raise _fail(f"the certificate input is neither DER, PEM nor base64 text: it {describe_prefix(raw)}")
    text = text.lstrip("\ufeff").strip().strip("\x00")
    if "-----BEGIN " in text:
        blocks = _pem_blocks(text)
        if not blocks:
            raise _fail("the input has a PEM '-----BEGIN' line but no complete PEM block")
        return Decoded(blocks=blocks, from_text=True)
    if not _B64_CHARS.fullmatch(_WHITESPACE.sub("", text)):
        raise _fail(
            f"the certificate input is neither DER, PEM nor base64 text: it {describe_prefix(text.encode())}"
        )
    decoded = _b64(text, "the certificate input")
    binary = _as_binary(decoded)
    inner = _to_text(decoded) if binary is None and not _nested else None
    if inner is not None:
        inner = inner.lstrip("\ufeff").strip().strip("\x00")
        compact = _WHITESPACE.sub("", inner)
        looks_base64 = len(compact) >= 64 and len(compact) % 4 == 0 and _B64_CHARS.fullmatch(compact)
        if "-----BEGIN " in inner or looks_base64:
            # base64 of a text file (how producers send every file): PEM or base64 text, with
            # a UTF-8 BOM or in UTF-16 — decode that text the same way
            return decode(decoded, _nested=True)
    if binary is None:
        extent = _der_extent(decoded)
        if extent is not None and extent > len(decoded):
            raise _fail(
                f"the certificate input looks like DER but is truncated: {len(decoded)} of {extent} bytes"
            )
        raise _fail(
            "the certificate input is base64 but does not decode to a DER certificate, PKCS#7 or "
            f"PKCS#12: the decoded data {describe_prefix(decoded)}"
        )
    return Decoded(der=binary, from_text=True)


def decode_input(data: bytes | str) -> bytes:
    """Normalise certificate input to bytes.

    Base64 text (any whitespace/CRLF), a single PEM block (any certificate, PKCS#7, PKCS#12 or
    key armour), a UTF-8 BOM and UTF-16 LE/BE text (with or without BOM) all decode to the same
    DER/BER bytes; raw binary passes through. Input with several PEM blocks (a chain, or a
    certificate with its key) is returned as normalised PEM text (ASCII, LF line ends), since
    it has no single binary form. Anything else raises CertificateInputError with code
    ``invalid_certificate_data`` and a message saying what the first bytes look like.
    """
    decoded = decode(data)
    if decoded.der is not None:
        return decoded.der
    if len(decoded.blocks) == 1 and not decoded.blocks[0].has_headers:
        return decoded.blocks[0].der
    return ("\n".join(b.text.replace("\r\n", "\n") for b in decoded.blocks) + "\n").encode("ascii")
