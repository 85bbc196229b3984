"""What a job implementation returns (before :func:`worker.jobs.run` adds timings and identity)."""

from __future__ import annotations

from dataclasses import dataclass, field

from producer.codes import ResultCode
from producer.messages import CertificateItem, KeyAccess, SslMapping, Status


@dataclass(frozen=True)
class Outcome:
    """The result of one job implementation."""

    status: Status
    code: ResultCode
    message: str
    warnings: list[str] = field(default_factory=list)
    items: list[CertificateItem] | None = None
    thumbprint: str | None = None
    csr: str | None = None
    key_access: list[KeyAccess] | None = None
    ssl_mappings: list[SslMapping] | None = None


class JobStepError(Exception):
    """A job step failed with a known code; :func:`worker.jobs.run` turns it into a result."""

    def __init__(self, code: ResultCode, message: str, warnings: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.warnings = list(warnings or [])
