"""The WS-Management faults the simulator sends, with Windows' codes and texts.

Each fault is raised as :class:`WSManFault` anywhere in request handling and turned into a SOAP
fault (HTTP 500) by the HTTP layer. Codes are Win32 HRESULTs from ``winrm.h`` as Windows reports
them in ``f:WSManFault/@Code`` (MS-WSMV 2.2.4.43 / 3.1.4.x); texts are copied from recordings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WSManFault(Exception):  # noqa: N818 - named after MS-WSMV f:WSManFault
    """A fault to return: ``code`` (decimal WSManFault Code), SOAP ``subcode``, ``reason``."""

    code: int
    subcode: str
    reason: str
    sender: bool = True
    fault_detail: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def operation_timeout() -> WSManFault:
    """0x80338029: no output within OperationTimeout; pypsrp re-polls on this code."""
    return WSManFault(
        2150858793,
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in"
        " OperationTimeout.  ",
        sender=False,
    )


def unknown_shell() -> WSManFault:
    """0x8033805B: the ShellId/CommandId selector names nothing (shell closed or never existed)."""
    return WSManFault(
        2150858843,
        "w:InvalidSelectors",
        "The request for the Windows Remote Shell with ShellId was not found. The shell may have been"
        " closed or the ShellId is invalid. ",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def unknown_command() -> WSManFault:
    """0x8033805B for a CommandId that does not exist (text from test_psrp_receive_failure.yml)."""
    return WSManFault(
        2150858843,
        "w:InvalidSelectors",
        "The Windows Remote Shell received a request to perform an operation on a command identifier"
        " that does not exist. Either the command has completed execution or the client specified an"
        " invalid command identifier. ",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def action_not_supported(action: str) -> WSManFault:
    """0x80338013: an action this endpoint does not implement (Enumerate, Disconnect, ...)."""
    return WSManFault(
        2150858771,
        "a:ActionNotSupported",
        f"The WS-Management service cannot process the request because the action is not supported: {action}",
    )


def bad_resource_uri(uri: str) -> WSManFault:
    """0x80338000: a ResourceURI this endpoint does not serve."""
    return WSManFault(
        2150858752,
        "w:DestinationUnreachable",
        f"The WS-Management service cannot process the request. The resource URI ({uri}) was not found.",
    )


def unknown_configuration(uri: str) -> WSManFault:
    """0x8033803B: a PowerShell resource URI whose session configuration is not registered.

    What Windows answers when ``configuration_name`` (``New-PSSession -ConfigurationName``)
    names no registered PSSessionConfiguration; code and text as reported by pypsrp users
    (jborean93/pypsrp#41, #47), detail per DMTF DSP0226 (InvalidResourceURI).
    """
    return WSManFault(
        2150858811,
        "w:DestinationUnreachable",
        f"The WS-Management service cannot process the request. The resource URI ({uri}) was not found"
        " in the WS-Management catalog. The catalog contains the metadata that describes resources, or"
        " logical endpoints.",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidResourceURI",
    )


def envelope_too_big(limit: int) -> WSManFault:
    """0x80338008: the request exceeds MaxEnvelopeSizekb."""
    return WSManFault(
        2150858760,
        "w:EncodingLimit",
        f"The WS-Management service cannot process the request because the envelope size exceeds {limit}"
        " bytes.",
    )


def invalid_header(detail: str) -> WSManFault:
    """0x8033800F: a malformed request (invalid SOAP header, not XML)."""
    return WSManFault(
        2150858767,
        "a:InvalidMessageInformationHeader",
        f"The WS-Management service cannot process the request. {detail} ",
    )


def internal_error(detail: str) -> WSManFault:
    """0x80338012 (ERROR_WSMAN_INTERNAL_ERROR): a simulator bug, reported instead of a dropped socket."""
    return WSManFault(
        2150858770, "w:InternalError", f"The simulator failed to process the request: {detail}", sender=False
    )


# --- quotas (wsmerror.h codes; Windows returns them as w:QuotaLimit sender faults, HTTP 500) ----


def quota_max_shells(limit: int) -> WSManFault:
    """0x803381A5 ERROR_WSMAN_QUOTA_MAX_SHELLS: a Create beyond ``MaxShellsPerUser`` (text as
    PowerShell shows it: "This user is allowed a maximum number of N concurrent shells...")."""
    return WSManFault(
        2150859173,
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. This user is allowed a maximum number"
        f" of {limit} concurrent shells, which has been exceeded. Close existing shells or raise the"
        " quota for this user. ",
    )


def quota_max_operations(limit: int) -> WSManFault:
    """0x803381A6 ERROR_WSMAN_QUOTA_MAX_OPERATIONS: a request beyond
    ``MaxConcurrentOperationsPerUser`` operations in flight for one user."""
    return WSManFault(
        2150859174,
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. This user is allowed a maximum number"
        f" of {limit} concurrent operations, which has been exceeded. Close existing operations for"
        " this user, or raise the quota for this user. ",
    )


def quota_commands_per_shell(limit: int) -> WSManFault:
    """0x803381E9 ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ: a Command beyond the shell's
    command quota (the simulator counts the commands a shell has run; the text is the
    simulator's, in Windows' style)."""
    return WSManFault(
        2150859241,
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. The maximum number of commands per"
        f" shell ({limit}) has been exceeded for this shell. Open a new shell or raise the quota"
        " (MaxProcessesPerShell / MaxConcurrentCommandsPerShell). ",
    )
