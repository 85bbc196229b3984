"""Stable, machine-readable result codes.

Every :class:`producer.messages.JobResult` carries exactly one of these codes. The values are
part of the public contract: never rename one, only add. ``docs/result-codes.md`` documents each
code with what the user should check; a unit test keeps that page and this enum in step.
"""

from __future__ import annotations

from enum import StrEnum


class ResultCode(StrEnum):
    """Stable result codes (lower-case snake case strings on the wire)."""

    # --- success ---------------------------------------------------------------------------
    OK = "ok"
    """The job did what it was asked to do."""
    ALREADY_PRESENT = "already_present"
    """Add of a certificate that is already in the store with the same thumbprint (idempotent)."""
    ALREADY_ABSENT = "already_absent"
    """Remove of a certificate that is not in the store (idempotent)."""

    # --- warning ---------------------------------------------------------------------------
    PARTIAL = "partial"
    """The job finished but skipped some items; the result's ``warnings`` say which and why."""

    # --- failure: the job itself -----------------------------------------------------------
    INVALID_JOB = "invalid_job"
    """The job failed schema validation on the worker (a producer bypassed validation)."""
    STORE_NOT_FOUND = "store_not_found"
    """The certificate store named by the store path does not exist on the host."""
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"
    """The named credential is not configured on the worker, or an inline secret cannot be
    decrypted with the worker's ``WINCERT_SECRET_KEYS``."""

    # --- failure: connection ---------------------------------------------------------------
    AUTH_FAILED = "auth_failed"
    """The host refused the credentials (HTTP 401 after the authentication exchange)."""
    HOST_UNREACHABLE = "host_unreachable"
    """No TCP connection to the WinRM listener (refused, no route, DNS failure, connect timeout)."""
    TLS_ERROR = "tls_error"
    """The HTTPS handshake failed, typically certificate validation of the WinRM listener."""
    TIMEOUT = "timeout"
    """The host accepted the connection but did not answer in time."""
    WINRM_FAULT = "winrm_fault"
    """The WinRM service answered with a WS-Management fault (quota, bad endpoint, ...)."""

    # --- failure: remote execution ---------------------------------------------------------
    REMOTE_ERROR = "remote_error"
    """A PowerShell function on the host failed with an error this project does not classify."""

    # --- failure: orchestration ------------------------------------------------------------
    SLOT_DEADLINE_EXCEEDED = "slot_deadline_exceeded"
    """The job waited longer than ``WINCERT_SLOT_WAIT_DEADLINE`` for a per-host slot."""
    INTERNAL_ERROR = "internal_error"
    """A defect in the worker; the message and the worker log (by job id) say more."""


SUCCESS_CODES = frozenset({ResultCode.OK, ResultCode.ALREADY_PRESENT, ResultCode.ALREADY_ABSENT})
WARNING_CODES = frozenset({ResultCode.PARTIAL})
