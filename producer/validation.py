"""Field validators shared by the producer's models (host names, thumbprints, control characters)."""

from __future__ import annotations

import ipaddress
import re

HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
THUMBPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
"""A certificate thumbprint as this project writes it: SHA-1 of the DER, 40 upper-case hex."""


def validate_host(value: str) -> str:
    """Check a host name or IP literal; return it with IPv6 brackets removed.

    Accepts an RFC 1123 host name (labels of letters, digits and ``-``, at most 253
    characters), an IPv4 literal, or an IPv6 literal with or without ``[...]``.

    Raises:
        ValueError: with a message saying what a valid host looks like.
    """
    host = value.strip()
    if not host:
        raise ValueError("is empty; give a host name or IP address, e.g. web01.contoso.com")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"{value!r} is not a valid host name or IP address; use letters, digits, '-' and '.'"
            " (e.g. web01.contoso.com), an IPv4 address, or an IPv6 address in brackets; put the"
            " port in the 'port' field"
        )
    if name.replace(".", "").isdigit():
        raise ValueError(
            f"{value!r} looks like an IPv4 address but is not a valid one; use four numbers 0-255"
            " separated by dots, e.g. 192.0.2.10"
        )
    return host


def normalize_thumbprint(value: str) -> str:
    """Normalise a thumbprint copied from anywhere to 40 upper-case hex characters.

    Removes spaces, colons and the invisible marks U+200E, U+200F and U+FEFF that come with
    copying from the Windows certificate UI, and upper-cases the rest.

    Raises:
        ValueError: if the result is not 40 hex characters.
    """
    cleaned = re.sub(r"[\s:\u200e\u200f\ufeff]", "", value).upper()
    if not THUMBPRINT_RE.fullmatch(cleaned):
        raise ValueError(f"{value!r} is not a SHA-1 thumbprint (40 hex characters)")
    return cleaned
