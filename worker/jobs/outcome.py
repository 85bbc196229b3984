"""What a job implementation returns (before :func:`worker.jobs.run` adds timings and identity)."""

from __future__ import annotations

from dataclasses import dataclass, field

from producer.codes import ResultCode
from producer.messages import CertificateItem, Status


@dataclass(frozen=True)
class Outcome:
    """The result of one job implementation."""

    status: Status
    code: ResultCode
    message: str
    warnings: list[str] = field(default_factory=list)
    items: list[CertificateItem] | None = None
