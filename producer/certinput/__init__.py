"""Certificate input for Management Add: decode, check and understand it before any remote call
(pure Python, ``cryptography``). The worker runs it on every Add job; ``wincert add`` runs the
same checks when it holds the file and the password, before anything is enqueued.

Public API::

    decode_input(data) -> bytes
    parse_certificate_input(data, password, *, os_build=None, rewrap_legacy=False) -> ParsedCertificate
    rewrap_pkcs12_legacy(parsed, password) -> bytes
    to_pkcs12_for_host(parsed, key, password) -> bytes
    CertificateInputError(.code, .message), ParsedCertificate, PbeInfo, WINDOWS_MAX_PBKDF_ITERATIONS
"""

from .errors import ALL_CODES, CertificateInputError
from .model import (
    WINDOWS_MAX_PBKDF_ITERATIONS,
    WINDOWS_MIN_BUILD_PBES2,
    InputFormat,
    ParsedCertificate,
    PbeInfo,
)
from .parse import parse_certificate_input, thumbprint_of
from .rewrap import rewrap_pkcs12_legacy, to_pkcs12_for_host
from .sniff import decode_input

__all__ = [
    "ALL_CODES",
    "WINDOWS_MAX_PBKDF_ITERATIONS",
    "WINDOWS_MIN_BUILD_PBES2",
    "CertificateInputError",
    "InputFormat",
    "ParsedCertificate",
    "PbeInfo",
    "decode_input",
    "parse_certificate_input",
    "rewrap_pkcs12_legacy",
    "thumbprint_of",
    "to_pkcs12_for_host",
]
