"""Build PowerShell ErrorRecords (MS-PSRP 2.2.3.15) from :class:`simulator.runtime.CommandError`.

Shape follows Windows (``test_psrp_error_failed.yml``): ``<ToString>`` of the record is the
message (pypsrp's ``str(record)``, pitfall 5), the exception carries the .NET type names and
``Message``, ``FullyQualifiedErrorId`` is the error id unchanged, and ``ErrorCategory_Message``
reads ``Category: (target:String) [Activity], Reason``.
"""

from __future__ import annotations

from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException

from simulator.runtime import CommandError

_BASE_TYPES = ["System.SystemException", "System.Exception", "System.Object"]


class WindowsCategoryInfo(ErrorCategoryInfo):
    """CategoryInfo whose text is Windows' ``Category: (Target:Type) [Activity], Reason``.

    psrpcore 0.3.1 omits the colon after the category; pypsrp shows this text as ``.message``.
    """

    def __str__(self) -> str:
        return (
            f"{self.Category.name}: ({self.TargetName or ''}:{self.TargetType or ''}) "
            f"[{self.Activity or ''}], {self.Reason or ''}"
        )


def error_record(error: CommandError, activity: str = "") -> ErrorRecord:
    """An ErrorRecord for ``error``; ``activity`` is the command name (CategoryInfo.Activity)."""
    exception = NETException(Message=error.message, HResult=-2146233087)
    exception.PSObject.type_names = [error.exception_type, *_BASE_TYPES]
    exception.PSObject.to_string = f"{error.exception_type}: {error.message}"
    try:
        category = ErrorCategory[error.category]
    except KeyError:
        category = ErrorCategory.NotSpecified
    info = WindowsCategoryInfo(
        Category=category,
        Activity=activity,
        Reason=error.exception_type.rsplit(".", 1)[-1],
        TargetName=error.target or "",
        TargetType="String" if error.target is not None else "",
    )
    record = ErrorRecord(
        Exception=exception,
        CategoryInfo=info,
        TargetObject=error.target,
        FullyQualifiedErrorId=error.error_id,
    )
    record.PSObject.to_string = error.message
    return record
