"""The one exception this package raises, and its stable result codes."""

from __future__ import annotations

from typing import Final

INVALID_CERTIFICATE_DATA: Final = "invalid_certificate_data"
UNSUPPORTED_CERTIFICATE_FORMAT: Final = "unsupported_certificate_format"
PFX_PASSWORD_INCORRECT: Final = "pfx_password_incorrect"  # noqa: S105 (a result code)
PFX_MULTIPLE_KEYS: Final = "pfx_multiple_keys"
PFX_KEY_WITHOUT_CERTIFICATE: Final = "pfx_key_without_certificate"
AMBIGUOUS_LEAF: Final = "ambiguous_leaf"
PFX_ITERATIONS_EXCEED_WINDOWS_LIMIT: Final = "pfx_iterations_exceed_windows_limit"
PFX_ALGORITHM_UNSUPPORTED_BY_HOST: Final = "pfx_algorithm_unsupported_by_host"

ALL_CODES: Final = frozenset(
    {
        INVALID_CERTIFICATE_DATA,
        UNSUPPORTED_CERTIFICATE_FORMAT,
        PFX_PASSWORD_INCORRECT,
        PFX_MULTIPLE_KEYS,
        PFX_KEY_WITHOUT_CERTIFICATE,
        AMBIGUOUS_LEAF,
        PFX_ITERATIONS_EXCEED_WINDOWS_LIMIT,
        PFX_ALGORITHM_UNSUPPORTED_BY_HOST,
    }
)


class CertificateInputError(Exception):
    """Certificate input the worker refuses before any remote call.

    ``code`` is one of the stable result codes above; ``message`` says what to fix. Neither
    ever contains the password, key material or the input bytes (beyond a short prefix of
    input that is *not* a certificate, to say what it looks like).
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in ALL_CODES:
            raise ValueError(f"unknown certificate input code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
