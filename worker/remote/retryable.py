"""Which failures of a pooled session are worth one retry on a fresh session
(:func:`is_connection_error`, :func:`is_quota_fault`; :mod:`worker.remote.pool` decides when).

Split from :mod:`worker.remote.pool` (which re-exports these names). Pure functions of the
exception: pypsrp's :class:`~pypsrp.exceptions.WSManFaultError` (``code``: the WS-Management
fault number, decimal), :class:`~pypsrp.exceptions.WinRMTransportError` (``code``: HTTP status)
and requests' connection errors.
"""

from __future__ import annotations

import requests
from pypsrp.exceptions import WinRMTransportError, WSManFaultError

from worker.remote.errors import QUOTA_FAULTS

__all__ = ["SHELL_NOT_FOUND", "is_connection_error", "is_quota_fault"]

SHELL_NOT_FOUND = "2150858843"
"""WS-Management fault 0x8033805B: the host no longer knows the shell (WinRM restarted, or the
shell's own idle timeout closed it). Reopening is the fix."""


def is_quota_fault(exc: BaseException) -> bool:
    """A WinRM quota fault (MaxShellsPerUser, MaxConcurrentOperationsPerUser, commands per
    shell): worth one retry on a fresh session after this process freed what it holds."""
    return isinstance(exc, WSManFaultError) and str(exc.code) in QUOTA_FAULTS


def is_connection_error(exc: BaseException) -> bool:
    """True for failures of the connection rather than of the host's answer or the function.

    These are worth one retry on a fresh session: an HTTP error status other than 401 (pypsrp's
    symptom of a dropped encrypted keep-alive connection is ``WinRMTransportError`` 400), a
    connection reset / refused / closed, or the shell-not-found fault. Authentication failures,
    timeouts (the call may still be running; a retry would double the wait) and every other
    fault are not.
    """
    if isinstance(exc, WSManFaultError):
        return str(exc.code) == SHELL_NOT_FOUND
    if isinstance(exc, WinRMTransportError):
        return bool(exc.code != 401)
    if isinstance(exc, requests.exceptions.Timeout):
        return False
    return isinstance(exc, requests.exceptions.ConnectionError | ConnectionError)
