"""Read certificates (and private keys) from files: PEM, DER, PKCS#12 and PKCS#7.

Used to seed simulated stores (:class:`simulator.config.SeedSpec`) and by the demo.

* PEM: every ``CERTIFICATE`` / ``X509 CERTIFICATE`` block is loaded on its own (a bad block is
  skipped, the others still load); ``PRIVATE KEY`` / ``RSA PRIVATE KEY`` / ``EC PRIVATE KEY`` /
  ``ENCRYPTED PRIVATE KEY`` blocks are attached to the certificate whose public key they match;
  ``PKCS7`` blocks contribute their certificates.
* DER: a single certificate, else a DER PKCS#7 bundle.
* PKCS#12: with the given password (or none); the private key is attached to the certificate
  (leaf or "additional") whose public key matches it; PKCS#12 friendly names are kept.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

log = logging.getLogger(__name__)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY",
               b"ENCRYPTED PRIVATE KEY"}


class CertificateLoadError(ValueError):
    """A file holds no certificate this loader can read (message names the file and why)."""


@dataclass(frozen=True)
class LoadedCertificate:
    """One certificate read from a file: DER bytes, matching private key (or None), friendly name."""

    der: bytes
    private_key: PrivateKeyTypes | None = None
    friendly_name: str = ""


def _spki(key_or_cert: x509.Certificate | PrivateKeyTypes) -> bytes | None:
    try:
        public = key_or_cert.public_key()
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:  # unsupported key types cannot match anything
        return None


def _attach_keys(
    certs: list[tuple[x509.Certificate, str]], keys: list[PrivateKeyTypes]
) -> list[LoadedCertificate]:
    by_spki = {spki: key for key in keys if (spki := _spki(key)) is not None}
    loaded: list[LoadedCertificate] = []
    for cert, name in certs:
        spki = _spki(cert) if by_spki else None
        key = by_spki.get(spki) if spki is not None else None
        loaded.append(LoadedCertificate(cert.public_bytes(serialization.Encoding.DER), key, name))
    return loaded


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None or isinstance(password, bytes):
        return password
    return password.encode("utf-8")


def _load_pem(data: bytes, password: bytes | None, source: Path) -> list[LoadedCertificate]:
    certs: list[tuple[x509.Certificate, str]] = []
    keys: list[PrivateKeyTypes] = []
    for match in _PEM_BLOCK.finditer(data):
        label, block = match.group(1), match.group(0)
        try:
            if label in _CERT_LABELS:
                certs.append((x509.load_pem_x509_certificate(block), ""))
            elif label in _KEY_LABELS:
                try:
                    keys.append(serialization.load_pem_private_key(block, password))
                except TypeError:  # a password for an unencrypted key (or none for an encrypted one)
                    keys.append(serialization.load_pem_private_key(block, None))
            elif label == b"PKCS7":
                certs.extend((c, "") for c in pkcs7.load_pem_pkcs7_certificates(block))
        except Exception as exc:  # one bad block must not hide the others
            log.warning("skipping a %s block in %s: %s", label.decode(), source, exc)
    return _attach_keys(certs, keys)


def _load_pkcs12(data: bytes, password: bytes | None) -> list[LoadedCertificate]:
    attempts = [password] if password is None else [password, None]
    error: Exception | None = None
    for attempt in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "falling back to parsing as BER"
                bundle = pkcs12.load_pkcs12(data, attempt)
        except Exception as exc:
            error = error or exc
            continue
        entries = ([bundle.cert] if bundle.cert is not None else []) + list(bundle.additional_certs)
        certs = [
            (entry.certificate, (entry.friendly_name or b"").decode("utf-8", "replace")) for entry in entries
        ]
        return _attach_keys(certs, [bundle.key] if bundle.key is not None else [])
    raise CertificateLoadError(f"not a readable PKCS#12 file ({error})")


def load_certificate_file(path: Path, password: str | bytes | None = None) -> list[LoadedCertificate]:
    """Every certificate in one file (see the module docstring for the formats).

    Raises:
        CertificateLoadError: no certificate could be read from the file.
        OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    secret = _password_bytes(password)
    if b"-----BEGIN " in data:
        loaded = _load_pem(data, secret, Path(path))
        if loaded:
            return loaded
        raise CertificateLoadError(f"{path}: no loadable certificate in PEM data")
    try:
        cert = x509.load_der_x509_certificate(data)
        return [LoadedCertificate(cert.public_bytes(serialization.Encoding.DER))]
    except ValueError:
        pass
    try:
        return [LoadedCertificate(c.public_bytes(serialization.Encoding.DER))
                for c in pkcs7.load_der_pkcs7_certificates(data)]
    except ValueError:
        pass
    try:
        loaded = _load_pkcs12(data, secret)
    except CertificateLoadError as exc:
        raise CertificateLoadError(f"{path}: not a certificate, PKCS#7 or PKCS#12 file: {exc}") from None
    if not loaded:
        raise CertificateLoadError(f"{path}: the PKCS#12 file holds no certificate")
    return loaded


def load_certificate_entries(
    path: Path, password: str | bytes | None = None, recursive: bool = False
) -> list[LoadedCertificate]:
    """Certificates from a file, or from every loadable file of a directory (sorted by name).

    In a directory, unloadable files are skipped with a log line; ``recursive`` descends into
    sub-directories. A single file that cannot be loaded raises.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CertificateLoadError: ``path`` is a file with no loadable certificate.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"certificate path not found: {path}")
    if path.is_file():
        return load_certificate_file(path, password)
    files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())
    loaded: list[LoadedCertificate] = []
    for file in files:
        try:
            loaded.extend(load_certificate_file(file, password))
        except (CertificateLoadError, OSError) as exc:
            log.info("seed: skipping %s: %s", file, exc)
    return loaded


def load_certificates_from_path(
    path: Path, password: str | bytes | None = None, recursive: bool = False
) -> list[tuple[bytes, PrivateKeyTypes | None]]:
    """``[(der, private_key or None), ...]`` for a file or directory.

    Same rules as :func:`load_certificate_entries` (which also gives PKCS#12 friendly names).
    """
    return [(entry.der, entry.private_key) for entry in load_certificate_entries(path, password, recursive)]
