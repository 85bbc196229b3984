"""worker.remote.invoke._LeanSerializer reads PSRP strings exactly as pypsrp 0.9.1 does.

Strings with no ``_xHHHH_`` escape skip pypsrp's UTF-16 round trip and regex; these tests hold
the fast path to pypsrp's own results (MS-PSRP 2.2.5.3.2), escapes and quirks included.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pypsrp.serializer import Serializer

from worker.remote.invoke import _LeanSerializer

SAMPLES = [
    "",
    "plain ascii",
    "_x000D_",
    "line_x000D__x000A_next",
    "_x005F_x000D_ an escaped escape",
    "_x005F_x",
    "_X000D_ upper-case X is not an escape",
    "_x00e9_ lower-case hex",
    "_xD83D__xDE00_ a surrogate pair",
    "_x000_ too short",
    "a_x",
    "x_",
    "\u5f00\u0078\u0030 U+5F00 then x",
    "\u5f00",
    "\u0000\u5f00\u0078\u0030\u0030\u0030\u0030\u0041\u0030\u0030\u005f",
    "\u4e00\u5f00x0041__ CJK",
    "ünïcødé ✓ 证书 😀",
    '{"thumbprint":"AB12","subject":"CN=x_y","friendly_name":"_x0007_bell"}',
    json.dumps({"friendly_name": "a" * 70000}),
    "_x00G0_ not hex (pypsrp raises)",
    "_x\u0000000_ NUL in an escape (pypsrp raises)",
    "_x\u4130\u3030\u3030\u3030_ wide code units of the byte class (pypsrp raises)",
    "_x\u00e9000_ outside the class: not an escape",
    "_x_x0041_ overlap: the second one is the escape",
    "_x0041__x0042_ adjacent",
    "_xd83d__xde00_ a surrogate pair, lower-case",
    "_xD83D_ a lone high surrogate (pypsrp raises)",
    "\ud800 a lone surrogate in the text (pypsrp raises)",
    "\ud800_x0041_ a lone surrogate and an escape",
    "😀_x0041_😀 astral characters around an escape",
    "_x0000_ NUL",
    "_xFFFF_ _x005F_ _x00A0_",
    "_x005f_x005F_x0041_ escaped escapes",
    "_x0041__x0042",
    "a_x000A_b_x000A_",
    "_x000A_x000A_ overlapping newlines",
    "_x000A__x000A_ adjacent newlines",
    "_x000A_x000A",
    "_x000a_ lower-case newline",
    "_x000A_ and _x0041_",
]


def _random_strings(count: int) -> list[str]:
    rng = random.Random(13)
    alphabet = ["_", "x", "_x", "_x00", "X", "0", "0", "4", "1", "D", "5", "F", "f", "G", "\u5f00"]
    alphabet += ["\u0078", "a", "é", "😀", "\u0000", "\u4130", "\ud83d", "\ude00", "\n"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 32))) for _ in range(count)]


def _both(text: str) -> tuple[Any, Any]:
    """pypsrp's result and the worker's for one ``<S>`` string, ValueErrors included."""
    out = []
    for serializer in (Serializer(), _LeanSerializer()):
        try:
            out.append(("ok", serializer._deserialize_string(text)))
        except ValueError as err:  # pypsrp's unhexlify of a bad escape (e.g. _x00G0_)
            out.append(("error", type(err).__name__))
    return out[0], out[1]


@pytest.mark.parametrize("text", SAMPLES)
def test_strings_read_as_pypsrp_reads_them(text: str) -> None:
    ours, theirs = _both(text)
    assert ours == theirs


def test_random_strings_read_as_pypsrp_reads_them() -> None:
    for text in _random_strings(20000):
        ours, theirs = _both(text)
        assert ours == theirs, repr(text)


def test_a_batch_of_records_reads_as_pypsrp_reads_it() -> None:
    """The shape that matters: ~64 KB of newline-separated JSON records, each newline sent as
    ``_x000A_`` (the host's ``Get-WinCertInventory`` batches)."""
    record = json.dumps({"Thumbprint": "AB" * 20, "Subject": "CN=a_x0041_b, O=Ünï 😀", "FriendlyName": "x_y"})
    text = Serializer()._serialize_string("\n".join([record] * 500))
    assert "_x000A_" in text
    ours, theirs = _both(text)
    assert ours == theirs
    assert ours[1].count("\n") == 499


def test_random_escapes_read_as_pypsrp_reads_them() -> None:
    """Text that the worker's own decoder reads (no U+5F00, no surrogate): many escapes,
    broken ones and near misses."""
    rng = random.Random(5)
    parts = ["_x", "_x00", "00", "0", "4", "1", "A", "f", "_", "x", "G", "\n", "é", "😀", "\u4130", "a"]
    parts.append("_x000A_")
    decoded = 0
    for _ in range(20000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 24)))
        ours, theirs = _both(text)
        assert ours == theirs, repr(text)
        decoded += ours[0] == "ok" and ours[1] != text
    assert decoded > 5000


def test_none_is_the_empty_string() -> None:
    assert _LeanSerializer()._deserialize_string(None) == ""


@pytest.mark.parametrize("text", [t for t in SAMPLES[:19] if t])
def test_string_elements_deserialise_as_pypsrp_does(text: str) -> None:
    """Through ``deserialize`` of an ``<S>`` element and an ``<Obj>`` with ``<ToString>``, the way
    output records arrive."""
    escaped = Serializer()._serialize_string(text)
    xml = f"<S>{_xml(escaped)}</S>"
    ours = _LeanSerializer().deserialize(ET.fromstring(xml))
    assert ours == Serializer().deserialize(ET.fromstring(xml)) == text
    xml = f'<Obj RefId="0"><ToString>{_xml(escaped)}</ToString></Obj>'
    ours = _LeanSerializer().deserialize(ET.fromstring(xml))
    assert ours.to_string == Serializer().deserialize(ET.fromstring(xml)).to_string == text


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
