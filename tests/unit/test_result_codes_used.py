"""Every result code is produced somewhere: the enum holds no code the worker never returns."""

from __future__ import annotations

import re
from pathlib import Path

from producer.codes import ResultCode

ROOT = Path(__file__).resolve().parents[2]


def test_every_result_code_is_produced_by_the_worker() -> None:
    files = [*(ROOT / "worker").rglob("*.py"), *(ROOT / "producer" / "certinput").rglob("*.py")]
    sources = "\n".join(p.read_text(encoding="utf-8") for p in files)
    used = set(re.findall(r"ResultCode\.([A-Z_]+)", sources))
    # certificate-input codes are raised by producer/certinput via CertificateInputError(ResultCode.X)
    assert {code.name for code in ResultCode} - used == set()
