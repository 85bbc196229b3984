"""The state document's thumbprints are exactly 40 upper-case hex digits: a document read from
Redis whose thumbprint carries anything more (a trailing newline, which a ``$``-anchored
``re.match`` lets through) is refused as a whole."""

from __future__ import annotations

import json

import pytest

from producer.inventory_model import InvalidStateError, is_thumbprint, parse_document

T = "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.mark.parametrize("value", [T + "\n", "\n" + T, T + "\r\n", T + " ", T.lower(), T[:39], T + "0"])
def test_anything_but_40_upper_case_hex_digits_is_not_a_thumbprint(value: str) -> None:
    assert is_thumbprint(T)
    assert not is_thumbprint(value)


def test_a_state_document_with_a_trailing_newline_in_a_thumbprint_is_refused() -> None:
    entry = {"alias": T, "thumbprint": T, "not_after": 1_800_000_000, "seen": 1.0}
    doc = {"store_type": "WinCert", "host": "web01", "store_path": "My", "certificates": [entry]}
    assert parse_document(json.dumps(doc)).certificates[0].thumbprint == T
    doc["certificates"] = [{**entry, "thumbprint": T + "\n"}]
    with pytest.raises(InvalidStateError, match="thumbprint"):
        parse_document(json.dumps(doc))
