"""WinRM client-certificate authentication: the listener's certificate mapping (HTTPS only).

Windows maps a client certificate to a local account with a ``WSMan:\\localhost\\ClientCertificate``
entry (``New-Item -Path WSMan:\\localhost\\ClientCertificate -Subject <UPN> -URI * -Issuer
<CA thumbprint> -Credential <local account>``). A request authenticates when (as Windows checks it):

* the client presented a certificate during the TLS handshake, which chains to a CA in the
  host's ``LocalMachine\\Root`` store (the TLS layer verifies chain and validity);
* the certificate has the Client Authentication EKU (1.3.6.1.5.5.7.3.2) and a UPN
  (otherName 1.3.6.1.4.1.311.20.2.3) subject alternative name;
* a mapping's ``subject`` equals that UPN (case-insensitive; ``*`` matches any) and its
  ``issuer`` is the thumbprint of the CA certificate that signed it.

The request then runs as the mapping's account. pypsrp asks for it with the header
``Authorization: http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

log = logging.getLogger(__name__)

MUTUAL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


@dataclass(frozen=True)
class Mapping:
    """One ClientCertificate mapping: UPN (or ``*``), issuing CA thumbprint, local account."""

    subject: str
    issuer: str
    account: str


def upn_of(cert: x509.Certificate) -> str | None:
    """The certificate's UPN SAN (a DER UTF8String in an otherName), if any."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for name in san.get_values_for_type(x509.OtherName):
        if name.type_id == UPN_OID and len(name.value) > 2 and name.value[0] == 0x0C:
            return name.value[2:].decode("utf-8", "replace")  # short-form DER length (UPNs < 128 bytes)
    return None


class CertificateMapper:
    """Maps a presented client certificate (DER) to ``HOST\\account`` or None.

    Args:
        host_name: the host (accounts are local: ``HOST\\account``).
        mappings: the host's ClientCertificate entries.
        roots: DER certificates of the host's Root store that mappings name as issuers.
    """

    def __init__(self, host_name: str, mappings: Iterable[Mapping], roots: Iterable[bytes]) -> None:
        self.host_name = host_name
        self.mappings = list(mappings)
        # thumbprints are SHA-1 of the DER, as Windows names certificates (not a security use)
        self.roots = {
            hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(): x509.load_der_x509_certificate(der)
            for der in roots
        }

    def map(self, der: bytes | None) -> str | None:
        if not der:
            log.info("certificate auth refused: no client certificate presented")
            return None
        cert = x509.load_der_x509_certificate(der)
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            log.info("certificate auth refused: no Client Authentication EKU")
            return None
        upn = upn_of(cert)
        if upn is None:
            log.info("certificate auth refused: no UPN subject alternative name")
            return None
        for mapping in self.mappings:
            if mapping.subject != "*" and mapping.subject.lower() != upn.lower():
                continue
            issuer = self.roots.get(mapping.issuer)
            if issuer is None or issuer.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:  # signature or key type mismatch
                log.info("certificate auth: not signed by mapped issuer %s (%s)", mapping.issuer, exc)
                continue
            log.info("certificate auth: %s mapped to %s", upn, mapping.account)
            return f"{self.host_name}\\{mapping.account}"
        log.info("certificate auth refused: no ClientCertificate mapping for %s", upn)
        return None
