"""worker.result_json: a result serialised with an earlier result's items array (and its
deflate) spliced in reads back exactly as ``model_dump_json`` and ``result_store.encode``."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

from producer import result_store
from producer.codes import ResultCode
from producer.messages import CertificateItem, InventoryChanges, JobResult, JobType, Status
from worker import result_json

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def items(count: int, der: str = "") -> list[CertificateItem]:
    return [
        CertificateItem(
            alias=f"{n:040X}",
            thumbprint=f"{n:040X}",
            subject=f'CN=h{n}.contoso.test, O="A ""B"""',
            issuer="CN=CA",
            serial_number=f"{n + 1:X}",
            not_before=NOW,
            not_after=NOW + timedelta(days=n),
            has_private_key=n % 2 == 0,
            friendly_name=f"name \u00e9 {n}",
            der_b64=der,
        )
        for n in range(count)
    ]


def result(listed: list[CertificateItem] | None, message: str = "Inventory completed") -> JobResult:
    return JobResult(
        job_id=uuid.uuid4(), job_type=JobType.INVENTORY, status=Status.SUCCESS, code=ResultCode.OK,
        message=message, warnings=['a "quoted" warning'], started_at=NOW, finished_at=NOW,
        items=listed, changes=InventoryChanges(added=0, removed=0, unchanged=len(listed or [])),
    )  # fmt: skip


def check(serialised: result_json.Serialised, original: JobResult, inline: int = 16_384) -> None:
    assert json.loads(serialised.json) == json.loads(original.model_dump_json())
    kept, encoding = result_json.kept_value(serialised, inline)
    assert encoding == result_store.encode(serialised.json, inline)[1]
    assert result_store.decode(kept).encode("utf-8") == serialised.json
    if encoding == result_store.COMPRESSED:
        assert gzip.decompress(base64.b64decode(kept)) == serialised.json


def test_the_same_items_are_spliced_in_and_read_back_as_a_whole_result() -> None:
    listed = items(300)
    first = result(listed)
    one = result_json.serialise(first)
    check(one, first)
    # another result (other fields) of the very same item objects: the kept array, reused
    second = result(list(listed), message="Inventory completed again \u2713")
    two = result_json.serialise(second)
    assert two.items is one.items and two.items is not None
    check(two, second)
    kept, _ = result_json.kept_value(two, 16_384)
    assert len(kept) < len(two.json) // 3  # still compressed
    # equal but not the same objects: serialised anew
    copies = [i.model_copy() for i in listed]
    third = result(copies)
    three = result_json.serialise(third)
    assert three.items is not one.items
    check(three, third)


def test_small_results_and_results_with_der_are_serialised_whole() -> None:
    small = result(items(3))
    assert result_json.serialise(small).items is None
    check(result_json.serialise(small), small)
    empty = result(None)
    assert result_json.serialise(empty).json == empty.model_dump_json().encode()
    with_der = result(items(250, der="MIIB"))
    serialised = result_json.serialise(with_der)
    assert serialised.items is None
    check(serialised, with_der)
    check(serialised, with_der, inline=10**9)  # inline: the JSON itself
