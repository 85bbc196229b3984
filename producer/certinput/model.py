"""Result types of certificate input parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

InputFormat = Literal["pkcs12", "der", "pem", "pkcs7"]

#: Windows (.NET / CNG PFX import) refuses PKCS#12 files whose PBKDF or MAC iteration count
#: exceeds this value.
WINDOWS_MAX_PBKDF_ITERATIONS = 600_000

#: First build that imports PBES2 (AES) protected PKCS#12 files: Windows Server 2019.
WINDOWS_MIN_BUILD_PBES2 = 17763


@dataclass(frozen=True)
class PbeInfo:
    """What protects a PKCS#12 file.

    Algorithm strings: ``"none"`` = present but not encrypted (plain keyBag, or certificates in
    an unencrypted container); ``"absent"`` = the file holds no such item. PBES2 is written as
    ``"PBES2/<cipher>/PBKDF2-<prf>"`` (e.g. ``"PBES2/AES-256-CBC/PBKDF2-HMAC-SHA256"``), PKCS#12
    PBES1 by its RFC 7292 name (e.g. ``"pbeWithSHA1And3-KeyTripleDES-CBC"``). When items use
    different algorithms they are joined with ``" + "``. Iteration counts are the largest seen
    (None when nothing of that kind is derived from the password).
    """

    key_algorithm: str
    cert_algorithm: str
    mac_algorithm: str  # "HMAC-SHA1", "HMAC-SHA256", ..., "PBMAC1/HMAC-SHA256/PBKDF2-HMAC-SHA256", "none"
    mac_iterations: int | None
    key_iterations: int | None
    cert_iterations: int | None

    @property
    def uses_pbes2(self) -> bool:
        return any(
            a.startswith(("PBES2", "PBMAC1")) or " + PBES2" in a
            for a in (self.key_algorithm, self.cert_algorithm, self.mac_algorithm)
        )

    @property
    def max_iterations(self) -> int:
        return max(
            (i for i in (self.mac_iterations, self.key_iterations, self.cert_iterations) if i), default=0
        )


@dataclass(frozen=True)
class ParsedCertificate:
    """A certificate input checked and understood on the worker, before any remote call."""

    thumbprint: str  # 40 upper-case hex: SHA-1 of leaf_der
    leaf_der: bytes = field(repr=False)
    has_private_key: bool
    chain_der: list[bytes] = field(repr=False)  # others, deduplicated, leaf excluded, leaf-to-root first
    input_format: InputFormat
    pkcs12_bytes: bytes | None = field(repr=False)  # what to send to the host (None: send leaf_der)
    key_algorithm: str  # of the leaf's public key: "RSA", "EC", "DSA", "Ed25519", "Ed448", ...
    key_size: int | None
    pbe: PbeInfo | None
    rewrapped: bool = False  # pkcs12_bytes is a 3DES/SHA1 re-encoding made here
    leaf_subject: str = ""  # RFC 4514, for messages and logs
