"""X.500 subject names for reenrollment: parse what users write, emit one canonical form.

Users write subjects the way Windows and certreq show them (``CN=web01, O="Contoso, Inc"``) or
RFC 4514 style (``CN=web01,O=Contoso\\, Inc``). :func:`parse_subject` accepts both: RDNs
separated by ``,`` or ``;``; a value either quoted (``"..."``, a ``""`` inside is one ``"``) or
unquoted with backslash escapes (``\\,`` ``\\+`` ``\\"`` ``\\\\`` ...); empty values allowed
(``OU=``). Multi-valued RDNs (``+``) are not supported and are refused clearly.

:func:`canonical_subject` writes the Windows form: ``ATTR=value`` joined by ``", "``, and a
value that contains ``, + = " \\ < > # ;``, leading/trailing spaces or is empty is quoted with
inner quotes doubled. That string is what the worker sends to the host as the certreq
``Subject`` (the PowerShell doubles quotes again for the INF line, as certreq requires). The
order is the written order: most specific first, as Windows shows it.
"""

from __future__ import annotations

import re

ATTRIBUTES = {
    "CN": "CN",
    "O": "O",
    "OU": "OU",
    "L": "L",
    "S": "S",
    "ST": "S",
    "C": "C",
    "E": "E",
    "EMAIL": "E",
    "EMAILADDRESS": "E",
    "DC": "DC",
    "STREET": "STREET",
    "SERIALNUMBER": "SERIALNUMBER",
    "G": "G",
    "GIVENNAME": "G",
    "SN": "SN",
    "T": "T",
    "TITLE": "T",
    "POSTALCODE": "PostalCode",
    "DESCRIPTION": "Description",
}
"""Attribute names accepted (case-insensitive) → the short name Windows writes."""

_OID = re.compile(r"^OID\.(\d+(\.\d+)+)$", re.IGNORECASE)
_NEEDS_QUOTES = re.compile(r'[,+="\\<>#;]|^\s|\s$')


def _attribute(name: str) -> str:
    key = name.strip()
    if _OID.fullmatch(key):
        return "OID." + key.split(".", 1)[1]
    canonical = ATTRIBUTES.get(key.upper())
    if canonical is None:
        raise ValueError(
            f"subject attribute {key!r} is not known; use CN, O, OU, L, S, C, E, DC, STREET,"
            " SERIALNUMBER, G, SN, T or OID.n.n.n"
        )
    return canonical


def parse_subject(text: str) -> list[tuple[str, str]]:
    """Parse ``text`` into ``[(attribute, value), ...]`` in written order.

    Raises:
        ValueError: with the position and what is wrong (unterminated quote, missing ``=``,
            unknown attribute, multi-valued RDN, no CN/other RDN at all).
    """
    rdns: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f"subject: expected ATTR=value at position {i + 1} of {text!r}")
        attr = _attribute(text[i:eq])
        i = eq + 1
        while i < n and text[i] == " ":
            i += 1
        value_chars: list[str] = []
        if i < n and text[i] == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError(f"subject: unterminated quoted value for {attr} in {text!r}")
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        value_chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                value_chars.append(text[i])
                i += 1
            while i < n and text[i] == " ":
                i += 1
        else:
            while i < n and text[i] not in ",;+":
                if text[i] == "\\" and i + 1 < n:
                    value_chars.append(text[i + 1])
                    i += 2
                    continue
                value_chars.append(text[i])
                i += 1
            while value_chars and value_chars[-1] == " ":
                value_chars.pop()
        if i < n and text[i] == "+":
            raise ValueError(f"subject: multi-valued RDNs ('+') are not supported: {text!r}")
        if i < n and text[i] not in ",;":
            raise ValueError(f"subject: unexpected {text[i]!r} at position {i + 1} of {text!r}")
        rdns.append((attr, "".join(value_chars)))
        i += 1
        if i == n and text.rstrip().endswith((",", ";")):
            raise ValueError(f"subject: trailing separator in {text!r}")
    if not rdns:
        raise ValueError("subject is empty; give at least CN=<name>")
    return rdns


def quote_value(value: str) -> str:
    """A value as Windows writes it: quoted (inner ``"`` doubled) when it needs quoting."""
    if value == "" or _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def canonical_subject(text: str) -> str:
    """``text`` re-written in the canonical Windows form (see the module docstring).

    Raises:
        ValueError: see :func:`parse_subject`.
    """
    return ", ".join(f"{attr}={quote_value(value)}" for attr, value in parse_subject(text))
