"""The test CA: a root key and self-signed certificate persisted in a directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_FILE = "ca-key.pem"
CERT_FILE = "ca-cert.pem"
REFUSED_SUFFIX = ".invalid"
"""A CSR whose CN ends with this (RFC 2606 reserved TLD) is refused: lets tests and the demo
exercise a failing signer."""


class TestCAError(ValueError):
    """The CSR cannot be signed (unreadable, or its signature does not verify)."""


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TestCA:
    """A root CA under ``directory`` (``ca-key.pem`` mode 0600, ``ca-cert.pem``), created on
    first use; safe to open from several processes at once (a file lock guards creation)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path | str, name: str = "WinCert Orchestrator Test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory):
            key_file, cert_file = self.directory / KEY_FILE, self.directory / CERT_FILE
            if not key_file.exists() or not cert_file.exists():
                self._create(name, key_file, cert_file)
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.key = key
            self.certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())

    @staticmethod
    def _create(name: str, key_file: Path, cert_file: Path) -> None:
        key = ec.generate_private_key(ec.SECP384R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "WinCert Orchestrator (test only)"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = key_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # O_EXCL below: a leftover file must not keep its permissions
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.replace(tmp, key_file)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    @property
    def certificate_pem(self) -> str:
        """The CA certificate (PEM)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def sign(self, csr_pem: str, days: int = 90) -> x509.Certificate:
        """Issue a TLS server certificate for ``csr_pem``: the CSR's subject and SAN extension,
        EKU serverAuth, key usage for its key type, valid ``days`` days.

        Raises:
            TestCAError: the CSR is unreadable or its signature does not verify.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise TestCAError(f"not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise TestCAError("the certificate request's signature does not verify with its key")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if any(str(n.value).lower().endswith(REFUSED_SUFFIX) for n in names):
            raise TestCAError(
                f"the test CA refuses subjects ending in {REFUSED_SUFFIX!r} (signer failure test)"
            )
        public_key = csr.public_key()
        is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, not is_ec, False, False, is_ec, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        with contextlib.suppress(x509.ExtensionNotFound):
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            builder = builder.add_extension(san.value, critical=san.critical)
        return builder.sign(self.key, hashes.SHA384())

    def sign_pem(self, csr_pem: str) -> str:
        """:meth:`sign` as PEM: the issued certificate followed by the CA certificate."""
        issued = self.sign(csr_pem).public_bytes(serialization.Encoding.PEM).decode("ascii")
        return issued + self.certificate_pem
