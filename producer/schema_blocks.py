"""Building blocks of the job JSON Schema (:mod:`producer.schema`): regular-expression pieces and
small schema constructors.

The patterns (no anchors unless said) mirror what the models' validators accept: IPv4/IPv6 as
Python's ``ipaddress`` reads them, host names, thumbprints, ports, IIS host headers, SQL instance
names, X.500 subjects, the peer's legacy SAN text. They are written for ECMAScript with the ``u``
flag (what Ajv uses) and stay valid in Python's ``re`` as well.
"""

from __future__ import annotations

from typing import Any

from producer.jsontypes import UUID_PATTERN
from producer.messages import SAN_KEYWORDS, StoreType
from producer.subject import ATTRIBUTES

Schema = dict[str, Any]
"""A JSON Schema node."""


def ci(word: str) -> str:
    """``word`` as a case-insensitive pattern (``My`` -> ``[Mm][Yy]``); JS has no ``(?i)``."""
    out = []
    for ch in word:
        if ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        elif ch in ".*+?()[]{}|^$\\/":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


# --- pattern building blocks (no anchors) -------------------------------------------------------

WS = r"\s*"
NO_CTRL = r"[^\x00-\x1f\x7f]"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
"""IPv4 as Python's ``ipaddress`` reads it: four decimal octets, no leading zeros."""
_H = "[0-9A-Fa-f]{1,4}"


def _groups(count: int) -> str:
    """``count`` colon-separated hex groups of IPv6 (empty for 0)."""
    return "" if count == 0 else (_H if count == 1 else f"{_H}(?::{_H}){{{count - 1}}}")


def _ipv6() -> str:
    """Every IPv6 spelling: eight groups, ``::`` compression, an embedded IPv4 tail."""
    alternatives = [f"{_groups(8)}", f"{_groups(6)}:{IPV4}"]
    for before in range(8):  # "::" stands for at least one group
        tail = 7 - before
        after = f"(?:{_H}(?::{_H}){{0,{tail - 1}}})?" if tail > 0 else ""
        alternatives.append(f"{_groups(before)}::{after}")
    for before in range(6):
        tail = 5 - before  # hex groups after "::", before the IPv4 part (2 groups)
        middle = f"(?:{_H}:){{0,{tail}}}" if tail > 0 else ""
        alternatives.append(f"{_groups(before)}::{middle}{IPV4}")
    return "(?:" + "|".join(alternatives) + ")"


IPV6 = _ipv6()
"""IPv6 as Python's ``ipaddress`` reads it (without zone ids)."""
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"


def host_pattern(end: str, *, names_only: bool = False) -> str:
    """A host as ``validate_host`` accepts it, followed by ``end`` (a lookahead anchor): an IP
    literal (IPv6 with or without brackets) or an RFC 1123 name of at most 253 characters
    (one trailing dot allowed) that is not all digits and dots; ``names_only``: names alone."""

    def name(until: str) -> str:
        return (
            rf"(?![0-9.]+{until})(?=(?:[A-Za-z0-9-]|\.(?=[A-Za-z0-9-])){{1,253}}\.?{until})"
            rf"{_LABEL}(?:\.{_LABEL})*\.?"
        )

    in_brackets = name(r"\]" + end)
    if names_only:
        return rf"(?:\[{in_brackets}\]|{name(end)})"
    return rf"(?:{IPV4}|{IPV6}|\[(?:{IPV4}|{IPV6}|{in_brackets})\]|{name(end)})"


LOCAL_NAME = f"(?:{ci('localhost')}|{ci('localmachine')})"
_THUMB_SEP = r"[\s\u200e\u200f\ufeff]"
THUMB_HEAD = rf"{_THUMB_SEP}*(?:[0-9A-Fa-f]{_THUMB_SEP}*){{40}}"
_THUMB_SEP_COLON = r"[\s:\u200e\u200f\ufeff]"
THUMBPRINT_TEXT = rf"{_THUMB_SEP_COLON}*(?:[0-9A-Fa-f]{_THUMB_SEP_COLON}*){{40}}"
"""A thumbprint as ``normalize_thumbprint`` reads it: 40 hex digits among spaces, colons and the
invisible marks the Windows certificate UI adds."""
PORT_NUMBER = r"0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_IIS_LABEL = r"(?!-)[\p{L}\p{M}\p{N}A-Za-z0-9-]{1,63}(?<!-)"
IIS_HOST = (
    rf"(?:{WS}\.*{WS}|{WS}(?:\*\.)?(?=(?:[^.\s]|\.(?=[^.\s])){{1,253}}\.*{WS}$)"
    rf"{_IIS_LABEL}(?:\.{_IIS_LABEL})*\.*{WS})"
)
"""An IIS host header as ``normalize_host_name`` accepts it: empty (dots and blanks only), or
a DNS name with an optional ``*.`` wildcard label and trailing dots (non-ASCII letters are
allowed; their IDNA conversion is checked by the models only)."""
IIS_IP = rf"{WS}(?:\*|{IPV4}|{IPV6}|\[(?:{IPV4}|{IPV6})\])?{WS}"
INSTANCE = rf"{WS}[^\x00-\x1f\x7f\s](?:{NO_CTRL}{{0,126}}[^\x00-\x1f\x7f\s])?{WS}"
INSTANCE_IN_LIST = INSTANCE.replace("\\x7f", "\\x7f,")
"""One name of the comma-separated form (no commas inside)."""


def _subject_pattern() -> str:
    """The anchored pattern of :data:`SUBJECT`."""
    names = sorted(ATTRIBUTES, key=len, reverse=True)
    attribute = "(?:" + "|".join(ci(n) for n in names) + rf"|{ci('OID')}\.[0-9]+(?:\.[0-9]+)+)"
    quoted = r'"(?:[^"]|"")*" *'
    unquoted = r'(?!")(?:\\[\s\S]|[^,;+\\])*\\?'
    rdn = rf"{WS}{attribute}{WS}= *(?:{quoted}|{unquoted})"
    return rf"^{rdn}(?:[,;]{rdn})*$"


SUBJECT = _subject_pattern()
"""An X.500 subject as :func:`producer.subject.parse_subject` reads it."""


def legacy_sans_pattern() -> str:
    """The peer's legacy SAN text (``dns=a&ip=b``) as ``parse_legacy_sans`` reads it, anchored."""
    ip_keys = "|".join(ci(k) for k, v in SAN_KEYWORDS.items() if v == "ip")
    other_keys = "|".join(ci(k) for k, v in SAN_KEYWORDS.items() if v != "ip")
    value = r"\s*[^&\s\x00-\x1f\x7f](?:[^&\x00-\x1f\x7f]*[^&\s\x00-\x1f\x7f])?\s*"
    part = rf"{WS}(?:(?:{ip_keys}){WS}={WS}(?:{IPV4}|{IPV6}){WS}|(?:{other_keys}){WS}={value})"
    blank = r"[^&\S]*"
    return rf"^(?:{part}|{blank})(?:&(?:{part}|{blank}))*$"


def pattern(regex: str, **extra: Any) -> Schema:
    """A string matching ``regex`` (plus ``extra`` keywords such as ``description``)."""
    return {"type": "string", "pattern": regex, **extra}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def all_of(*patterns: str, **extra: Any) -> Schema:
    """A string matching every pattern."""
    return {"type": "string", **extra, "allOf": [{"type": "string", "pattern": p} for p in patterns]}


NOT_BLANK = r"\S"
NO_CONTROL = rf"^{NO_CTRL}*$"
BOOL: Schema = {"type": "boolean"}

UUID_STRING: Schema = pattern(UUID_PATTERN)


def store_type_is(kind: StoreType) -> Schema:
    """An object whose ``store_type`` is ``kind`` (the ``if`` of a per-store-type rule)."""
    return {
        "type": "object",
        "required": ["store_type"],
        "properties": {"store_type": {"const": kind.value}},
    }
