"""Convert psrpcore-deserialised values (MS-PSRP 2.2.5 primitive and complex types) to plain Python.

Commands receive ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``datetime``, ``list``,
``dict`` or ``None`` — never psrpcore subclasses — so a value that arrived as data can never be
mistaken for anything else. SecureStrings (after key exchange) are decrypted to
:class:`~simulator.runtime.SecureText`
(a ``str`` subclass), so a command can tell them from plain strings as PowerShell does.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from psrpcore.types import PSObject, PSSecureString

from simulator.runtime import SecureText


def to_python(value: Any) -> Any:
    """Plain-Python copy of ``value`` (recursively for lists, dicts and property bags)."""
    if value is None:
        return None
    if isinstance(value, PSSecureString):
        return SecureText(value.decrypt())
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime.fromtimestamp(value.timestamp(), tz=value.tzinfo or datetime.UTC)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {to_python(k): to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_python(v) for v in value]
    if isinstance(value, PSObject):
        props = list(value.PSObject.adapted_properties) + list(value.PSObject.extended_properties)
        return {p.name: to_python(p.get_value(value)) for p in props}
    return value
