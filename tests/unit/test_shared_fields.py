"""worker.shared_fields: kept models share their class's fields set, and nothing sees a difference."""

from __future__ import annotations

from pydantic import BaseModel

from producer.inventory_model import CertificateDetails, CertificateEntry
from producer.messages import SubjectAltName
from worker.inventory_entries import entry_from_item
from worker.jobs.wincert import parse_record
from worker.shared_fields import share_fields_set


def details(**fields: object) -> CertificateDetails:
    values: dict[str, object] = {"subject": "CN=x", "issuer": "CN=x", "serial_number": "01"}
    values["not_before"] = 1.0
    values.update(fields)
    return CertificateDetails.model_validate(values)


def test_models_with_every_field_set_share_one_equal_set() -> None:
    full = {"key_algorithm": "RSA", "key_size": 2048, "sans": [SubjectAltName(type="dns", value="a")]}
    a, b = details(**full), details(**full)
    before = set(a.model_fields_set)
    share_fields_set(a)
    share_fields_set(b)
    assert a.model_fields_set is b.model_fields_set
    assert a.model_fields_set == before
    assert a.model_dump(exclude_unset=True) == b.model_dump(exclude_unset=True) == a.model_dump()


def test_a_model_with_fields_left_unset_keeps_its_own_set() -> None:
    partial = details()
    own = partial.model_fields_set
    share_fields_set(partial)
    assert partial.model_fields_set is own
    assert "sans" not in partial.model_dump(exclude_unset=True)


def test_model_copy_with_an_update_never_changes_the_shared_set() -> None:
    entry = CertificateEntry(alias="A" * 40, thumbprint="A" * 40, subject_cn="", not_after=2.0, binding=None,
                             seen=1.0, details=None)  # fmt: skip
    share_fields_set(entry)
    shared = entry.model_fields_set
    names = set(shared)
    copy = entry.model_copy(update={"seen": 3.0})
    assert copy.model_fields_set is not shared
    assert shared == names


def test_a_mutable_model_is_left_alone() -> None:
    class Mutable(BaseModel):
        a: int

    model = Mutable(a=1)
    own = model.model_fields_set
    share_fields_set(model)
    assert model.model_fields_set is own


def test_parsed_items_and_their_state_entries_share_sets() -> None:
    import base64
    import hashlib
    import json

    der = b"0\x03\x02\x01\x01"
    thumb = hashlib.sha1(der).hexdigest().upper()
    record = {
        "Thumbprint": thumb, "Subject": "CN=a", "Issuer": "CN=a", "SerialNumber": "01",
        "NotBefore": "2026-01-01T00:00:00Z", "NotAfter": "2027-01-01T00:00:00Z", "HasPrivateKey": False,
        "FriendlyName": "", "KeyAlgorithm": "RSA", "KeySize": 2048, "Sans": [{"Type": "dns", "Value": "a"}],
        "RawData": base64.b64encode(der).decode(),
    }  # fmt: skip
    one, two = (parse_record(json.dumps(record), keep_der=False) for _ in range(2))
    assert one == two and one.model_fields_set is two.model_fields_set
    assert one.sans[0].model_fields_set is two.sans[0].model_fields_set
    e1, e2 = entry_from_item(one, 5.0), entry_from_item(two, 5.0)
    assert e1 == e2 and e1.model_fields_set is e2.model_fields_set
    assert e1.details is not None and e2.details is not None
    assert e1.details.model_fields_set is e2.details.model_fields_set
