"""Self-signed test CA and per-host server certificates for the HTTPS listeners.

Generated once with ``cryptography`` and persisted under ``<state_dir>/tls/``:
``ca.pem``/``ca.key`` (the CA clients trust: pass ``ca.pem`` as pypsrp's ``cert_validation``)
and ``<host>.pem``/``<host>.key`` with SANs ``127.0.0.1``, ``localhost`` and the host name.
Keys are written with mode 0600. Also computes the RFC 5929 ``tls-server-end-point`` channel
binding that NTLM over HTTPS binds to (MS-WSMV 3.1.4.1.1, pitfall 12).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ServerTLS:
    """Paths of one host's TLS material; ``ca_bundle`` is what clients should trust."""

    ca_bundle: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A server-side SSLContext (TLS 1.2+)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def channel_binding(self) -> bytes:
        """``tls-server-end-point:`` + hash of the server certificate (SHA-256 for our certs)."""
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        algorithm = cert.signature_hash_algorithm
        if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
            algorithm = hashes.SHA256()
        digest = hashes.Hash(algorithm)
        digest.update(cert.public_bytes(serialization.Encoding.DER))
        return b"tls-server-end-point:" + digest.finalize()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "WinCert Simulator Test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _covers(cert_path: Path, ips: list[Any]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ips) <= set(names.get_values_for_type(x509.IPAddress))


def ensure_server_tls(state_dir: Path, host_name: str, address: str = "127.0.0.1") -> ServerTLS:
    """Create (once) the CA and the server certificate for ``host_name``; return their paths.

    The certificate's SANs: ``127.0.0.1``, ``address`` (the listen address), ``localhost`` and
    the host name in lower case. A certificate made earlier without ``address`` is re-issued.
    """
    directory = state_dir / "tls"
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ensure_ca(directory)
    cert_path, key_path = directory / f"{host_name}.pem", directory / f"{host_name}.key"
    ips = sorted({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(address)}, key=str)
    if not (cert_path.exists() and key_path.exists() and _covers(cert_path, ips)):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        san = x509.SubjectAlternativeName(
            [
                *(x509.IPAddress(ip) for ip in ips),
                x509.DNSName("localhost"),
                x509.DNSName(host_name.lower()),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ServerTLS(directory / "ca.pem", cert_path, key_path)
