"""docs/result-codes.md lists exactly the codes of producer.codes.ResultCode."""

from __future__ import annotations

import re
from pathlib import Path

from producer.codes import SUCCESS_CODES, WARNING_CODES, ResultCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "result-codes.md"


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z_]+)` \| (success|warning|failure) \|", DOC.read_text(), re.M)
    return dict(rows)


def test_every_code_is_documented_once_with_its_status() -> None:
    documented = _documented()
    assert set(documented) == {code.value for code in ResultCode}
    for code in ResultCode:
        expected = (
            "success" if code in SUCCESS_CODES else "warning" if code in WARNING_CODES else "failure"
        )
        assert documented[code.value] == expected, code
