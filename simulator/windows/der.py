"""A small, strict-enough DER reader (ITU-T X.690) for the few structures inventory needs.

It mirrors the ``Read-DerElement`` helper inside ``worker/powershell/Inventory.ps1`` rule for
rule, so the simulator and a real Windows host accept and reject the same encodings:

* tags: class (2 bits), constructed bit, number (low form, or high form base-128);
* lengths: short form, or long form with 1-4 length octets; indefinite length is an error;
* an element's content must fit inside the enclosing data (no truncation).

Minimal-encoding rules are *not* enforced (neither side does), so BER-ish certificates that
Windows and ``cryptography`` accept do not fail here.
"""

from __future__ import annotations

from dataclasses import dataclass

UNIVERSAL = 0
APPLICATION = 1
CONTEXT = 2
PRIVATE = 3

TAG_INTEGER = 2
TAG_OID = 6
TAG_UTF8_STRING = 12
TAG_SEQUENCE = 16
TAG_SET = 17


class DerError(ValueError):
    """Malformed DER; the message names what is wrong (same texts as the PowerShell reader)."""


@dataclass(frozen=True)
class Element:
    """One TLV inside ``data``: ``data[start:end]`` is the whole element, content follows the header."""

    data: bytes
    tag_class: int
    constructed: bool
    tag_number: int
    start: int
    content_start: int
    end: int

    @property
    def content(self) -> bytes:
        """The content octets (no tag, no length)."""
        return self.data[self.content_start : self.end]

    @property
    def raw(self) -> bytes:
        """The whole encoding: tag, length and content."""
        return self.data[self.start : self.end]

    def is_universal(self, number: int) -> bool:
        """Whether this is the UNIVERSAL tag ``number`` (e.g. :data:`TAG_SEQUENCE`)."""
        return self.tag_class == UNIVERSAL and self.tag_number == number

    def children(self) -> list[Element]:
        """The content parsed as a list of elements that exactly fills it."""
        return read_elements(self.data, self.content_start, self.end)


def read_element(data: bytes, offset: int = 0, end: int | None = None) -> Element:
    """Read one element starting at ``offset``; the element must end at or before ``end``.

    Raises:
        DerError: truncated data, indefinite length, or a length over 4 octets.
    """
    limit = len(data) if end is None else end
    if offset >= limit:
        raise DerError("DER: unexpected end of data")
    first = data[offset]
    tag_class = first >> 6
    constructed = bool(first & 0x20)
    tag_number = first & 0x1F
    pos = offset + 1
    if tag_number == 0x1F:
        tag_number = 0
        while True:
            if pos >= limit:
                raise DerError("DER: unexpected end of data")
            byte = data[pos]
            pos += 1
            tag_number = tag_number * 128 + (byte & 0x7F)
            if not byte & 0x80:
                break
    if pos >= limit:
        raise DerError("DER: unexpected end of data")
    length_byte = data[pos]
    pos += 1
    if length_byte < 0x80:
        length = length_byte
    elif length_byte == 0x80:
        raise DerError("DER: indefinite length is not allowed")
    else:
        count = length_byte & 0x7F
        if count > 4:
            raise DerError("DER: length field too long")
        length = 0
        for _ in range(count):
            if pos >= limit:
                raise DerError("DER: unexpected end of data")
            length = length * 256 + data[pos]
            pos += 1
    if length > limit - pos:
        raise DerError("DER: length exceeds the available data")
    return Element(data, tag_class, constructed, tag_number, offset, pos, pos + length)


def read_elements(data: bytes, start: int, end: int) -> list[Element]:
    """Read consecutive elements that exactly fill ``data[start:end]``."""
    items: list[Element] = []
    pos = start
    while pos < end:
        item = read_element(data, pos, end)
        items.append(item)
        pos = item.end
    return items


def read_single(data: bytes) -> Element:
    """Read exactly one element that spans all of ``data``.

    Raises:
        DerError: malformed, or bytes left after the element ("DER: trailing data").
    """
    item = read_element(data, 0, len(data))
    if item.end != len(data):
        raise DerError("DER: trailing data")
    return item


def decode_oid(content: bytes) -> str:
    """Dotted-decimal text of OBJECT IDENTIFIER content octets (arcs of any size).

    Raises:
        DerError: empty content or a truncated last arc.
    """
    if not content:
        raise DerError("DER: empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    pending = False
    for byte in content:
        value = value * 128 + (byte & 0x7F)
        pending = bool(byte & 0x80)
        if not pending:
            arcs.append(value)
            value = 0
    if pending:
        raise DerError("DER: truncated OBJECT IDENTIFIER")
    first = arcs[0]
    if first < 40:
        head = [0, first]
    elif first < 80:
        head = [1, first - 40]
    else:
        head = [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])
