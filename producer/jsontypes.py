"""Field types that accept exactly what the job JSON Schema accepts (``producer/schema.py``).

Pydantic's lax mode converts more than JSON Schema allows (``"5986"`` or ``true`` for an
integer, ``"false"`` or ``0`` for a boolean, a Unix timestamp for a date-time, ``{...}`` or
``urn:uuid:`` UUIDs). Jobs arrive as JSON from producers in any language, validated by the
worker with these models and by other producers with the schema; both must give the same
verdict (``tests/unit/test_job_schema.py`` checks a shared corpus with Ajv). These types are
the JSON-strict ones; Python objects of the target type (``uuid.UUID``, ``datetime``) pass.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, StrictBool

UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
"""A UUID as JSON carries it: 8-4-4-4-12 hex digits, either case (RFC 9562 string form)."""

DATE_TIME_PATTERN = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""An RFC 3339 date-time with a UTC offset (``Z`` or ``±hh:mm``), at most microseconds.
(Calendar validity — 30 February — is checked by pydantic only.)"""


def _json_int(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer (a number, not a string or a boolean)")
    return value


def _json_uuid(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(UUID_PATTERN[1:-1], value):
        raise ValueError("Input should be a valid UUID in the form 0f8fad5b-d9cb-469f-a165-70867728950e")
    if not isinstance(value, str | uuid.UUID):
        raise ValueError("Input should be a valid UUID string, e.g. 0f8fad5b-d9cb-469f-a165-70867728950e")
    return value


def _json_date_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.fullmatch(DATE_TIME_PATTERN[1:-1], value):
        raise ValueError(
            "must be an RFC 3339 date-time with a UTC offset, e.g. 2026-12-07T16:00:00Z or"
            " 2026-12-07T17:00:00.250+01:00"
        )
    return value


def _json_literal(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_int)]
"""An integer from a JSON number (``5986`` or ``5986.0``); strings and booleans are refused."""
JsonBool = StrictBool
"""``true`` or ``false`` only."""
JsonUuid = Annotated[uuid.UUID, BeforeValidator(_json_uuid)]
"""A UUID from its 8-4-4-4-12 string (or a ``uuid.UUID``)."""
JsonDateTime = Annotated[AwareDatetime, BeforeValidator(_json_date_time)]
"""An aware date-time from an RFC 3339 string (or an aware ``datetime``)."""
NotBool = BeforeValidator(_json_literal)
"""For ``Literal[1]``: refuse ``true`` (Python's ``True == 1``)."""
