"""Subject alternative names: the structured form jobs and results carry, and the peer's legacy
``sans`` string (``dns=a&ip=1.2.3.4``) parsed into it."""

from __future__ import annotations

from typing import Literal

from producer.messages.base import _Model


class SubjectAltName(_Model):
    """One subject alternative name, structured (never localized display text)."""

    type: Literal["dns", "ip", "email", "upn", "uri", "dn", "other"]
    value: str


SAN_KEYWORDS = {
    "dns": "dns",
    "ip": "ip",
    "ipaddress": "ip",
    "ip4": "ip",
    "ip6": "ip",
    "email": "email",
    "rfc822": "email",
    "upn": "upn",
    "uri": "uri",
    "url": "uri",
}
"""Keyword of a legacy ``sans`` string (``dns=a&ip=1.2.3.4``, case-insensitive) → SAN kind;
the job schema (producer/schema_blocks.py) builds its pattern from the same table."""


def parse_legacy_sans(text: str) -> list[dict[str, str]]:
    """The peer's legacy SAN string ``dns=a.com&dns=b.com&ip=10.0.0.1`` as structured entries.

    Keys are matched case-insensitively with the peer's ``SANBuilder`` mapping (``ip``/``ip4``/
    ``ip6``/``ipaddress`` → ip, ``email``/``rfc822`` → email, ``uri``/``url`` → uri).

    Raises:
        ValueError: an entry is not ``type=value`` or names an unsupported type.
    """
    entries = []
    for part in (p for p in text.split("&") if p.strip()):
        key, sep, value = part.partition("=")
        kind = SAN_KEYWORDS.get(key.strip().lower())
        if not sep or kind is None or not value.strip():
            raise ValueError(
                f"SAN entry {part!r} is not type=value with a type of dns, ip, email, upn or uri"
            )
        entries.append({"type": kind, "value": value.strip()})
    return entries
