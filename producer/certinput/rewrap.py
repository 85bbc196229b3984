"""Re-encode certificate input as a PKCS#12 every supported Windows host can import."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from producer.codes import ResultCode

from .errors import CertificateInputError
from .model import ParsedCertificate
from .parse import _open_pkcs12, _select, _spki
from .pkcs12_writer import legacy_pkcs12


def rewrap_pkcs12_legacy(parsed: ParsedCertificate, password: str | None) -> bytes:
    """Re-encode ``parsed.pkcs12_bytes`` with pbeWithSHA1And3-KeyTripleDES-CBC for key and
    certificates, an HMAC-SHA1 MAC and 2048 iterations, protected by the same ``password``
    (which must open the original). Keeps the leaf's friendly name and the chain.

    With no/empty password the bags are left unencrypted (cryptography cannot encrypt with an
    empty password) and the MAC (HMAC-SHA256) is computed over exactly that password.
    Raises CertificateInputError like :func:`parse_certificate_input`, ValueError if ``parsed``
    has no PKCS#12 bytes.
    """
    if parsed.pkcs12_bytes is None:
        raise ValueError("the parsed input has no PKCS#12 bytes to re-wrap")
    opened = _open_pkcs12(parsed.pkcs12_bytes, password)
    leaf, key = _select(opened.certs, opened.keys, "PKCS#12 file")
    return legacy_pkcs12(leaf.der, key, parsed.chain_der, password, leaf.friendly_name)


def to_pkcs12_for_host(parsed: ParsedCertificate, key: PrivateKeyTypes, password: str | None) -> bytes:
    """Build the PKCS#12 sent to the host for a certificate whose key arrived as PEM.

    ``key`` must match ``parsed.leaf_der`` (else ``pfx_key_without_certificate``). The result
    holds the leaf, ``parsed.chain_der`` and the key with the legacy 3DES/SHA1 protection every
    Windows build imports, under ``password`` (None/"": see :func:`rewrap_pkcs12_legacy`). PEM
    keys are never sent to hosts as PEM.
    """
    leaf = x509.load_der_x509_certificate(parsed.leaf_der)
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise CertificateInputError(
            ResultCode.PFX_KEY_WITHOUT_CERTIFICATE, "the private key does not belong to the certificate"
        )
    return legacy_pkcs12(parsed.leaf_der, key, parsed.chain_der, password)
