"""Cryptographic providers of a simulated host: CryptoAPI CSPs and CNG KSPs.

Windows registers CSPs under ``HKLM\\SOFTWARE\\Microsoft\\Cryptography\\Defaults\\Provider\\<name>``
(with a ``Type`` DWORD: 1 PROV_RSA_FULL, 2 PROV_RSA_SIG, 3 PROV_DSS, 12 PROV_RSA_SCHANNEL,
13 PROV_DSS_DH, 18 PROV_DH_SCHANNEL, 24 PROV_RSA_AES) and CNG providers under
``HKLM\\SYSTEM\\CurrentControlSet\\Control\\Cryptography\\Providers\\<name>``; a CNG provider is a
key storage provider when it registers the key storage interface (``UM\\00010001``).
``Get-WinCertHostInfo`` reads exactly those keys; the simulator reads
:attr:`simulator.config.HostConfig.providers` (default: :data:`simulator.config.DEFAULT_PROVIDERS`).

What a provider can hold (used by ``Import-WinCertCertificate`` with ``-ProviderName``):

* CryptoAPI has no elliptic-curve support: a CSP holds RSA keys (RSA provider types) or DSA keys
  (DSS provider types), never ECDSA. A CSP name this table does not know is treated as an RSA CSP
  (``PROV_RSA_FULL`` is what third-party CSPs register almost always).
* ``Microsoft Software Key Storage Provider`` holds RSA, ECDSA (P-256/P-384/P-521) and DSA keys.
* ``Microsoft Platform Crypto Provider`` (TPM 2.0) holds RSA 1024/2048 and ECDSA P-256 keys and
  cannot mark an imported key exportable (modelled approximation).
* The smart-card providers fail without a card; ``Microsoft Passport Key Storage Provider``
  does not accept PKCS#12 imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

SOFTWARE_KSP = "Microsoft Software Key Storage Provider"
PLATFORM_KSP = "Microsoft Platform Crypto Provider"
SMART_CARD_KSP = "Microsoft Smart Card Key Storage Provider"
PASSPORT_KSP = "Microsoft Passport Key Storage Provider"
ENHANCED_CSP = "Microsoft Enhanced Cryptographic Provider v1.0"
ENHANCED_DSS_CSP = "Microsoft Enhanced DSS and Diffie-Hellman Cryptographic Provider"
SMART_CARD_CSP = "Microsoft Base Smart Card Crypto Provider"

# CSP name -> the key algorithm its provider type holds (Windows Server 2022 registrations).
CSP_KEY_ALGORITHM: dict[str, str] = {
    "Microsoft Base Cryptographic Provider v1.0": "RSA",
    "Microsoft Base DSS and Diffie-Hellman Cryptographic Provider": "DSA",
    "Microsoft Base DSS Cryptographic Provider": "DSA",
    SMART_CARD_CSP: "RSA",
    "Microsoft DH SChannel Cryptographic Provider": "DSA",
    ENHANCED_CSP: "RSA",
    ENHANCED_DSS_CSP: "DSA",
    "Microsoft Enhanced RSA and AES Cryptographic Provider": "RSA",
    "Microsoft RSA SChannel Cryptographic Provider": "RSA",
    "Microsoft Strong Cryptographic Provider": "RSA",
}

NO_SMART_CARD = "The operation requires a smart card, but no smart card is currently in the device."
NOT_SUPPORTED = "The requested operation is not supported."


@dataclass(frozen=True)
class KeyInfo:
    """Where an imported private key lives: provider name (as registered) and exportability."""

    provider: str
    exportable: bool


def key_algorithm(key: PrivateKeyTypes) -> str:
    """``RSA``, ``ECDSA``, ``DSA`` or the key class name (Ed25519, X25519, ...)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ECDSA"
    if isinstance(key, dsa.DSAPrivateKey):
        return "DSA"
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "")


def default_provider(key: PrivateKeyTypes) -> str:
    """The provider a PKCS#12 import without ``-ProviderName`` (and without a CSP attribute in
    the file) puts a key into: RSA keys go to the legacy Enhanced CSP, DSA keys to the DSS CSP,
    elliptic-curve keys to the Software KSP (``PFXImportCertStore`` without PREFER_CNG)."""
    algorithm = key_algorithm(key)
    if algorithm == "RSA":
        return ENHANCED_CSP
    if algorithm == "DSA":
        return ENHANCED_DSS_CSP
    return SOFTWARE_KSP


def normalize_provider_name(name: str) -> str:
    """The comparison key for a provider name: trimmed, case-insensitive."""
    return name.strip().casefold()


def find_provider(providers: list[tuple[str, str]], name: str) -> tuple[str, str] | None:
    """The ``(registered name, kind)`` matching ``name`` (trimmed, case-insensitive), or None."""
    wanted = normalize_provider_name(name)
    return next((p for p in providers if normalize_provider_name(p[0]) == wanted), None)


def provider_type_mismatch(provider: str, kind: str, key: PrivateKeyTypes) -> str | None:
    """Why a CSP's registered type cannot hold ``key`` (checked before anything changes, from the
    registry ``Type`` value on Windows), or None. KSPs always pass here."""
    if kind != "CSP":
        return None
    algorithm = key_algorithm(key)
    holds = CSP_KEY_ALGORITHM.get(provider, "RSA")
    if algorithm != holds:
        return f"This CryptoAPI provider holds {holds} keys only; the certificate's key is {algorithm}."
    return None


def provider_import_failure(provider: str, kind: str, key: PrivateKeyTypes, exportable: bool) -> str | None:
    """Why placing ``key`` into ``provider`` fails at import time (certutil's failure on Windows:
    no smart card, TPM limits, Passport), or None. Run after :func:`provider_type_mismatch`."""
    algorithm = key_algorithm(key)
    if provider in (SMART_CARD_CSP, SMART_CARD_KSP):
        return NO_SMART_CARD
    if kind == "CSP":
        return None
    if provider == PASSPORT_KSP:
        return NOT_SUPPORTED
    if provider == PLATFORM_KSP:
        fits = (algorithm == "RSA" and key.key_size in (1024, 2048)) or (  # type: ignore[union-attr]
            algorithm == "ECDSA" and key.curve.name == "secp256r1"  # type: ignore[union-attr]
        )
        return None if fits and not exportable else NOT_SUPPORTED
    if algorithm not in ("RSA", "ECDSA", "DSA"):
        return f"This provider cannot hold {algorithm} keys."
    return None
