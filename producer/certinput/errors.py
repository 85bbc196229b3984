"""The one exception this package raises; its codes are :class:`producer.codes.ResultCode` members."""

from __future__ import annotations

from typing import Final

from producer.codes import ResultCode

ALL_CODES: Final = frozenset(
    {
        ResultCode.INVALID_CERTIFICATE_DATA,
        ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
        ResultCode.PFX_PASSWORD_INCORRECT,
        ResultCode.PFX_MULTIPLE_KEYS,
        ResultCode.PFX_KEY_WITHOUT_CERTIFICATE,
        ResultCode.AMBIGUOUS_LEAF,
        ResultCode.PFX_ITERATIONS_EXCEED_WINDOWS_LIMIT,
        ResultCode.PFX_ALGORITHM_UNSUPPORTED_BY_HOST,
    }
)
"""The result codes of certificate input the worker refuses (``producer/codes.py``, the
"certificate input" group)."""


class CertificateInputError(Exception):
    """Certificate input the worker refuses before any remote call.

    ``code`` is one of :data:`ALL_CODES` (a :class:`~producer.codes.ResultCode`, a ``StrEnum``:
    it compares equal to its string value); ``message`` says what to fix. Neither ever contains
    the password, key material or the input bytes (beyond a short prefix of input that is *not*
    a certificate, to say what it looks like).
    """

    def __init__(self, code: ResultCode, message: str) -> None:
        if code not in ALL_CODES:
            raise ValueError(f"unknown certificate input code {code!r}")
        self.code: ResultCode = ResultCode(code)
        self.message = message
        super().__init__(f"{self.code.value}: {message}")
