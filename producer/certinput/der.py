"""A minimal, defensive DER/BER reader (just what PKCS#12 and friends need).

Supports low tag numbers, definite and indefinite lengths, and constructed OCTET STRINGs (BER
chunking, as written by some Java and Windows tools). Every malformed input raises
:class:`DerError`; nothing here allocates more than the input size.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 48

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
TAG_SET = 0x31
TAG_CONTEXT_0_CONSTRUCTED = 0xA0
TAG_CONTEXT_0_PRIMITIVE = 0x80


class DerError(ValueError):
    """The bytes are not valid DER/BER for the structure being read."""


@dataclass(frozen=True)
class Tlv:
    """One tag-length-value element; ``value`` is the content octets (EOC excluded)."""

    tag: int
    value: bytes
    encoded: bytes  # the whole element, header included

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    @property
    def tag_number(self) -> int:
        return self.tag & 0x1F

    @property
    def tag_class(self) -> int:
        return self.tag & 0xC0


def _read_header(data: bytes, pos: int) -> tuple[int, int | None, int]:
    """Return (tag, length or None for indefinite, position of the content)."""
    if pos >= len(data):
        raise DerError("unexpected end of data")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not supported")
    pos += 1
    if pos >= len(data):
        raise DerError("unexpected end of data in length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return tag, first, pos
    if first == 0x80:
        if not tag & 0x20:
            raise DerError("indefinite length on a primitive element")
        return tag, None, pos
    count = first & 0x7F
    if count > 4 or pos + count > len(data):
        raise DerError("length field too long")
    length = int.from_bytes(data[pos : pos + count], "big")
    return tag, length, pos + count


def read_tlv(data: bytes, pos: int = 0, _depth: int = 0) -> tuple[Tlv, int]:
    """Read one element at ``pos``; return it and the position after it."""
    if _depth > MAX_DEPTH:
        raise DerError("nesting too deep")
    start = pos
    tag, length, content = _read_header(data, pos)
    if length is not None:
        end = content + length
        if end > len(data):
            raise DerError("element longer than the data")
        return Tlv(tag, data[content:end], data[start:end]), end
    # indefinite length: children until end-of-contents (00 00)
    cur = content
    while True:
        if cur + 2 > len(data):
            raise DerError("missing end-of-contents")
        if data[cur] == 0 and data[cur + 1] == 0:
            return Tlv(tag, data[content:cur], data[start : cur + 2]), cur + 2
        _, cur = read_tlv(data, cur, _depth + 1)


def parse_single(data: bytes) -> Tlv:
    """Parse exactly one element that spans all of ``data``."""
    tlv, end = read_tlv(data, 0)
    if end != len(data):
        raise DerError(f"{len(data) - end} trailing bytes after the element")
    return tlv


def children(tlv: Tlv) -> list[Tlv]:
    if not tlv.constructed:
        raise DerError(f"expected a constructed element, got tag 0x{tlv.tag:02x}")
    out: list[Tlv] = []
    pos = 0
    while pos < len(tlv.value):
        child, pos = read_tlv(tlv.value, pos)
        out.append(child)
    return out


def expect(tlv: Tlv, tag: int, what: str) -> Tlv:
    if tlv.tag != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02x}, got 0x{tlv.tag:02x}")
    return tlv


def sequence(tlv: Tlv, what: str, minimum: int = 0) -> list[Tlv]:
    items = children(expect(tlv, TAG_SEQUENCE, what))
    if len(items) < minimum:
        raise DerError(f"{what}: expected at least {minimum} elements, got {len(items)}")
    return items


def octets(tlv: Tlv, _depth: int = 0) -> bytes:
    """Content of an OCTET STRING (or an implicitly tagged one), joining BER chunks."""
    if _depth > MAX_DEPTH:
        raise DerError("nesting too deep")
    if not tlv.constructed:
        return tlv.value
    return b"".join(octets(c, _depth + 1) for c in children(tlv))


def integer(tlv: Tlv, what: str) -> int:
    expect(tlv, TAG_INTEGER, what)
    if not tlv.value:
        raise DerError(f"{what}: empty INTEGER")
    return int.from_bytes(tlv.value, "big", signed=True)


def oid(tlv: Tlv, what: str) -> str:
    expect(tlv, TAG_OID, what)
    raw = tlv.value
    if not raw:
        raise DerError(f"{what}: empty OID")
    arcs: list[int] = []
    value = 0
    for b in raw:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    if raw[-1] & 0x80:
        raise DerError(f"{what}: truncated OID")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def algorithm(tlv: Tlv, what: str) -> tuple[str, Tlv | None]:
    """An AlgorithmIdentifier: (OID, parameters or None)."""
    items = sequence(tlv, what, 1)
    params = items[1] if len(items) > 1 else None
    if params is not None and params.tag == TAG_NULL:
        params = None
    return oid(items[0], what), params


def encode_tlv(tag: int, value: bytes) -> bytes:
    """DER-encode one element (definite length)."""
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value
