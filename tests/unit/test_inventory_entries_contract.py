"""worker.inventory_entries builds state entries from validated items without validating again:
the entries it builds equal what the models' validation makes of the same fields, and the
models still have the constraints its hand-written checks were written for.

If ``test_the_models_are_those_the_checks_were_written_for`` fails, a model changed: make
``_checked_entry`` / ``_checked_details`` (worker/inventory_entries.py) hold the new constraints,
add cases for them below, then record the models again with
``python -m tests.unit.test_inventory_entries_contract``.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ValidationError

from producer.inventory_model import CertificateDetails, CertificateEntry
from producer.messages import CertificateItem, SubjectAltName
from worker import inventory_entries
from worker.inventory_entries import entry_from_item

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "inventory-models" / "models.json"
T = "0123456789ABCDEF" * 2 + "01234567"  # 40 upper-case hex


def _describe(cls: type[BaseModel]) -> dict[str, Any]:
    d = cls.__pydantic_decorators__
    return {
        "model_config": {k: v for k, v in sorted(cls.model_config.items())},
        "field_validators": sorted(d.field_validators),
        "model_validators": sorted(d.model_validators),
        "field_serializers": sorted(d.field_serializers),
        "model_serializers": sorted(d.model_serializers),
    }


def models() -> dict[str, Any]:
    """What the fast path relies on: the entry's constraints and the item's types."""
    return {
        "schemas": {
            "CertificateEntry": CertificateEntry.model_json_schema(mode="validation"),
            "CertificateItem": CertificateItem.model_json_schema(mode="validation"),
        },
        "models": {
            c.__name__: _describe(c)
            for c in (CertificateEntry, CertificateDetails, CertificateItem, SubjectAltName)
        },
    }


def test_the_models_are_those_the_checks_were_written_for() -> None:
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    assert json.loads(json.dumps(models())) == recorded, __doc__


# --- the spread of items --------------------------------------------------------------------


def _der(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


HOSTILE = [
    "",
    "CN=plain",
    'CN="quoted, ""with"" quotes", O=x',
    "CN=a\\,b\\;c, O=x",
    "cn=lower; O=x",
    "O=no cn",
    "CN=\x00nul\x1b[31m\r\n\t",
    "CN=\u202eevil\u200b\ufeff",
    "CN=日本語.例え.テスト, O=Ünïcødé 🎉",
    "CN=" + "x" * 300,
    "x" * 4096,
    "x" * 4097,
    "é" * 4096,
    "<script>alert(1)</script>'; DROP TABLE x;--",
    "CN=\\",
    'CN="unterminated',
]


def _item(**fields: Any) -> CertificateItem:
    values: dict[str, Any] = {
        "alias": T,
        "thumbprint": T,
        "subject": "CN=a",
        "issuer": "CN=ca",
        "serial_number": "0A",
        "not_before": "2024-01-01T00:00:00Z",
        "not_after": "2026-01-01T00:00:00Z",
        "has_private_key": False,
        "der_b64": "",
    }
    values.update(fields)
    return CertificateItem.model_validate(values)


@dataclass(frozen=True)
class Case:
    name: str
    item: CertificateItem
    seen: Any = 1_765_000_000.25


def cases() -> list[Case]:
    out = [Case("defaults", _item())]
    out += [Case(f"subject {i}", _item(subject=s)) for i, s in enumerate(HOSTILE)]
    out += [Case(f"issuer {i}", _item(issuer=s)) for i, s in enumerate(HOSTILE)]
    out += [Case(f"key_algorithm {i}", _item(key_algorithm=s)) for i, s in enumerate(HOSTILE)]
    out += [Case(f"friendly_name {i}", _item(friendly_name=s)) for i, s in enumerate(HOSTILE)]
    out += [Case(f"key_algorithm len {n}", _item(key_algorithm="k" * n)) for n in (0, 256, 257)]
    for alias in (
        "",
        "a",
        "x" * 1024,
        "x" * 1025,
        f"{T}:Default Web Site:*:443:",
        f"{T}:" + "s" * 1100,
        f"{T}:日本:*:443:\u202e",
        "\n",
        T.lower(),
    ):
        out.append(Case(f"alias {alias[:50]!r}", _item(alias=alias)))
    for thumb in (T.lower(), T[:39], T + "0", T + "\n", "Z" * 40, "", " " + T[1:], T.lower()[:20] + T[20:]):
        out.append(Case(f"thumbprint {thumb!r}", _item(thumbprint=thumb)))
    for serial in ("", "0", "00", "ab", "AB\n", "\nAB", "A" * 128, "A" * 129, "0x1F", "\uff11\uff12", "A B"):
        out.append(Case(f"serial {serial!r}", _item(serial_number=serial)))
    for size in (None, 0, 1, 256, 1_000_000, 1_000_001, -1, True, False, 2**70):
        out.append(Case(f"key_size {size!r}", _item(key_size=size)))
    times = [
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999Z",
        "2024-02-29T12:34:56.123456+05:30",
        "2024-06-01T00:00:00-12:00",
        datetime(2024, 1, 1, 12, 0, 0),
        datetime(1970, 1, 1, 0, 0, 0),  # naive: local time
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        0,
        1.5,
        "2024-01-01",
    ]
    out += [Case(f"not_before {t!r}", _item(not_before=t)) for t in times]
    out += [Case(f"not_after {t!r}", _item(not_after=t)) for t in times]
    sans = [SubjectAltName(type="dns", value=v) for v in HOSTILE]
    out += [
        Case("sans hostile", _item(sans=sans)),
        Case(
            "sans every type",
            _item(
                sans=[{"type": k, "value": "v"} for k in ("dns", "ip", "email", "upn", "uri", "dn", "other")]
            ),
        ),
        Case("sans 1000", _item(sans=[{"type": "dns", "value": f"h{i}"} for i in range(1000)])),
        Case("sans 1001", _item(sans=[{"type": "dns", "value": f"h{i}"} for i in range(1001)])),
    ]
    out += [
        Case("instance", _item(parameters={"InstanceName": "MSSQLSERVER,SQL2"})),
        Case("instance long", _item(parameters={"InstanceName": "i" * 1025})),
        Case("instance int", _item(parameters={"InstanceName": 5})),
        Case("instance empty", _item(parameters={"InstanceName": ""})),
        Case("instance bool", _item(parameters={"InstanceName": True})),
        Case("der", _item(der_b64=_der("from-der.example"), subject="CN=from-subject")),
        Case("der unicode cn", _item(der_b64=_der('日本\u202e",' + "y" * 50))),
        Case("der garbage", _item(der_b64="bm90IGEgY2VydGlmaWNhdGU=", subject="CN=fallback")),
    ]
    for seen in (0.0, 0, 5, -1.0, -0.0, math.inf, math.nan, True, 1e300, 253402300800.0):
        out.append(Case(f"seen {seen!r}", _item(), seen))
    return out


CASES = cases()


def reference(item: CertificateItem, seen: Any) -> CertificateEntry:
    """What entry_from_item made before it built entries itself: the models' validation."""
    cn = inventory_entries._cn_of_item(item)
    details: CertificateDetails | None
    try:
        details = CertificateDetails.model_validate(
            {
                "subject": item.subject,
                "issuer": item.issuer,
                "serial_number": item.serial_number,
                "not_before": item.not_before.timestamp(),
                "key_algorithm": item.key_algorithm,
                "key_size": item.key_size,
                "sans": item.sans,
            }
        )
    except (ValidationError, ValueError, OverflowError):
        details = None
    return CertificateEntry.model_validate(
        {
            "alias": item.alias,
            "thumbprint": item.thumbprint.upper(),
            "subject_cn": cn,
            "not_after": item.not_after.timestamp(),
            "binding": inventory_entries._binding_of(item),
            "seen": seen,
            "details": details,
        }
    )


def _outcome(make: Any) -> tuple[str, Any]:
    try:
        return "ok", make()
    except ValidationError as exc:
        return "invalid", exc.errors(include_url=False, include_context=False)
    except (ValueError, OverflowError) as exc:
        return type(exc).__name__, str(exc)


def _same_model(fast: BaseModel, slow: BaseModel) -> None:
    assert type(fast) is type(slow)
    assert fast == slow
    assert list(fast.__dict__) == list(slow.__dict__)
    for name, value in slow.__dict__.items():
        assert type(fast.__dict__[name]) is type(value), name
        if isinstance(value, BaseModel):
            _same_model(fast.__dict__[name], value)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_entry_built_without_validation_equals_the_validated_one(case: Case) -> None:
    fast = _outcome(lambda: entry_from_item(case.item, case.seen))
    slow = _outcome(lambda: reference(case.item, case.seen))
    assert fast[0] == slow[0]
    if slow[0] != "ok":
        assert fast == slow  # the same error
        return
    entry, expected = fast[1], slow[1]
    _same_model(entry, expected)
    for mode in ("python", "json"):
        assert entry.model_dump(mode=mode) == expected.model_dump(mode=mode)
    assert entry.model_dump_json() == expected.model_dump_json()
    assert entry.model_dump_json(exclude_unset=True) == expected.model_dump_json(exclude_unset=True)
    if math.isfinite(entry.seen):  # inf and nan serialise as null (both paths)
        assert CertificateEntry.model_validate_json(entry.model_dump_json()) == entry
    if expected.details is not None:
        assert entry.details is not None
        assert entry.details.sans is not case.item.sans  # its own list, as validation makes


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_checks_refuse_exactly_what_validation_refuses(case: Case) -> None:
    """The fast path is taken for every valid case (the checks are no stricter than the models;
    looser would fail the test above)."""
    slow = _outcome(lambda: reference(case.item, case.seen))
    cn = inventory_entries._cn_of_item(case.item)
    binding = inventory_entries._binding_of(case.item)
    checked = _outcome(lambda: inventory_entries._checked_entry(case.item, cn, binding, case.seen))
    assert checked[0] == "ok"  # the checks never raise
    if slow[0] != "ok":
        assert checked[1] is None
        return
    if type(case.seen) is float:  # an int or bool seen goes through validation (converted)
        assert checked[1] is not None
    details = inventory_entries._checked_details(case.item)
    assert (details is None) == (slow[1].details is None)


def test_the_spread_covers_both_paths() -> None:
    outcomes = [_outcome(lambda c=c: reference(c.item, c.seen)) for c in CASES]
    valid = [o[1] for o in outcomes if o[0] == "ok"]
    assert len(valid) > 60
    assert len(valid) < len(CASES) - 10  # invalid entries (alias, thumbprint, dates, seen)
    assert sum(e.details is None for e in valid) > 15  # invalid details (serial, sizes, dates)


if __name__ == "__main__":  # record the models (see the module docstring)
    RECORDED.write_text(json.dumps(models(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {RECORDED}")


SUBJECTS = [
    *HOSTILE,
    "cN=mixed", "Cn=x;y", "CN=", "CN=,O=x", "CN=;", "CN=  spaced  , O=x", "CN =x", " CN=x", "CNN=x",
    "C=US, CN=second", "CN=a;b,c", "CN=a,b;c", 'CN= "q", O=x', 'CN=x"y', "CN=\n\t x \n", "CN=é\u0301",
    "CN=\u212aelvin", "\u0421N=cyrillic", "CN=" + "z" * 256, "CN=" + "z" * 257 + ",O=x", "CN=\ud800",
]  # fmt: skip


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_usual_subject_s_cn_is_the_pattern_s(subject: str) -> None:
    assert inventory_entries.common_name_of_subject(subject) == inventory_entries._common_name_by_pattern(
        subject
    )
