"""Pending certificate requests of a simulated host: on-device key generation as ``certreq -new
-machine`` does it, and pairing an issued certificate with its pending key (``certreq -accept``).

How Windows keeps a pending request, and how this model does the same:

* ``certreq -new`` creates the key pair in the machine key store of the provider and a
  self-signed *dummy* certificate for it in ``LocalMachine\\REQUEST`` (subject and extensions of
  the request, the ``FriendlyName`` of the INF). Here: a :class:`StoredCertificate` with the
  private key in the ``REQUEST`` store, friendly name :func:`request_tag` (``WinCert request
  <RequestId>``), the key's provider recorded as its :class:`KeyInfo`. The host model persists
  it like any store entry (``keys/<THUMB>.pem``, mode 0600), so it survives restarts.
* The CSR the request produced is kept per request id, as the PowerShell keeps it under
  ``%ProgramData%\\WinCertOrchestrator\\requests\\<RequestId>.csr``: here
  ``<state_dir>/requests/<RequestId>.csr`` (PEM), so a second call with the same id returns
  the very same CSR (ECDSA signatures are randomised; re-signing would give other bytes).
* ``certreq -accept`` finds the dummy certificate whose public key equals the issued
  certificate's, attaches that key to the issued certificate in ``My`` (with the dummy's
  friendly name, the tag) and deletes the dummy. The PowerShell then moves it to the store path
  (``Add`` there, ``Remove`` from ``My``), clears the tag and deletes the saved CSR. A worker
  that dies in between leaves one of two states, which a redelivered completion finishes
  (:meth:`PendingRequests.move_accepted`, :meth:`PendingRequests.drop_leftover`): the
  certificate with its key in ``My`` only (after the accept), or in the store path *and* in
  ``My`` (after the ``Add``).

The subject is the canonical Windows form the worker sends (``CN=web01, O="Contoso, Inc"``):
parsed here by :func:`parse_subject` (the simulator never imports ``producer``), encoded as
``CertStrToName`` does: written order is display order (most specific first), so the DER holds
the RDNs reversed. Subject alternative names are encoded as the PowerShell builds the extension
(dns, ip, email, upn, uri; in that order of kinds, each kind in the given order).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ObjectIdentifier

from simulator.windows.certificates import X500_SHORT_NAMES
from simulator.windows.certstore import StoredCertificate
from simulator.windows.providers import (
    CSP_KEY_ALGORITHM,
    NO_SMART_CARD,
    NOT_SUPPORTED,
    PASSPORT_KSP,
    PLATFORM_KSP,
    SMART_CARD_CSP,
    SMART_CARD_KSP,
    KeyInfo,
)

if TYPE_CHECKING:  # pragma: no cover
    from simulator.windows.host import WindowsHost

REQUEST_STORE = "REQUEST"
TAG_PREFIX = "WinCert request "
KEY_ALGORITHMS = ("RSA", "ECDSA_P256", "ECDSA_P384")
RSA_KEY_LENGTHS = (2048, 3072, 4096)
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\z"
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
SAN_KINDS = ("dns", "ip", "email", "upn", "uri")

_INVALID_X500 = (
    "Certificate Request Processor: The string contains an invalid X500 name attribute key, oid, value or"
    " delimiter. 0x80092023 (-2146885597 CRYPT_E_INVALID_X500_STRING)"
)
_NAME_OIDS = {short.upper(): oid for oid, short in reversed(list(X500_SHORT_NAMES.items()))}
_NAME_OIDS.update({"ST": "2.5.4.8", "EMAIL": "1.2.840.113549.1.9.1"})
_IA5_OIDS = {"1.2.840.113549.1.9.1", "0.9.2342.19200300.100.1.25"}
_PRINTABLE_OIDS = {"2.5.4.6", "2.5.4.5"}


class RequestError(Exception):
    """Key generation or pairing failed; ``error_id`` is the PowerShell's (``WinCert.*``)."""

    def __init__(self, message: str, error_id: str = "WinCert.KeyGenerationFailed") -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id


def request_tag(request_id: str) -> str:
    """The friendly name that tags a pending request's dummy certificate with its request id."""
    return TAG_PREFIX + request_id


def _tagged(friendly_name: str) -> str | None:
    """The request id of a :func:`request_tag` friendly name, or None."""
    return friendly_name.removeprefix(TAG_PREFIX) if friendly_name.startswith(TAG_PREFIX) else None


def certreq_failed(text: str, code: int = -2146885597) -> RequestError:
    """``WinCert.KeyGenerationFailed`` as the PowerShell reports a failed ``certreq -new``."""
    return RequestError(f"Key generation failed: certreq -new exited with code {code}: {text}")


# -- subject --------------------------------------------------------------------------------


def parse_subject(text: str) -> list[tuple[str, str]]:
    """``[(oid, value), ...]`` in written order from a Windows-form subject.

    RDNs separated by ``,`` or ``;``; a value either in double quotes (``""`` inside is one
    ``"``) or unquoted (trailing spaces trimmed); attribute names as ``CertStrToName`` knows
    them (``CN``, ``O``, ``OU``, ``L``, ``S``/``ST``, ``C``, ``E``, ``DC``, ...) or
    ``OID.n.n``. Multi-valued RDNs (``+``) are refused.

    Raises:
        RequestError: certreq's ``CRYPT_E_INVALID_X500_STRING`` failure.
    """
    rdns: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            raise certreq_failed(_INVALID_X500)
        name = text[i:eq].strip()
        if name.upper().startswith("OID.") and re.fullmatch(r"\d+(\.\d+)+", name[4:]):
            oid = name[4:]
        elif name.upper() in _NAME_OIDS:
            oid = _NAME_OIDS[name.upper()]
        else:
            raise certreq_failed(_INVALID_X500)
        i = eq + 1
        while i < n and text[i] == " ":
            i += 1
        chars: list[str] = []
        if i < n and text[i] == '"':
            i += 1
            while True:
                if i >= n:
                    raise certreq_failed(_INVALID_X500)
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            while i < n and text[i] == " ":
                i += 1
        else:
            while i < n and text[i] not in ",;+":
                if text[i] == '"':
                    raise certreq_failed(_INVALID_X500)
                chars.append(text[i])
                i += 1
            while chars and chars[-1] == " ":
                chars.pop()
        if i < n and text[i] not in ",;":
            raise certreq_failed(_INVALID_X500)
        rdns.append((oid, "".join(chars)))
        i += 1
    if not rdns:
        raise certreq_failed(_INVALID_X500)
    return rdns


def subject_name(text: str) -> x509.Name:
    """The DER-order :class:`x509.Name` ``certreq`` encodes for ``text`` (written order reversed)."""
    attributes = []
    for oid, value in reversed(parse_subject(text)):
        if oid in _IA5_OIDS:
            tag = _ASN1Type.IA5String
        elif oid in _PRINTABLE_OIDS:
            tag = _ASN1Type.PrintableString
        else:
            tag = _ASN1Type.UTF8String
        try:
            attributes.append(x509.NameAttribute(ObjectIdentifier(oid), value, tag))
        except ValueError:
            raise certreq_failed(_INVALID_X500) from None
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in attributes])


# -- subject alternative names --------------------------------------------------------------


def _ia5(kind: str, value: str) -> str:
    if not value or any(ord(c) > 0x7E or ord(c) < 0x20 for c in value):
        raise RequestError(
            f"Subject alternative name {kind} '{value}' is empty or not printable ASCII (an IA5String);"
            " give DNS names as A-labels (punycode)."
        )
    return value


def san_extension(sans: list[tuple[str, str]]) -> x509.SubjectAlternativeName | None:
    """The SAN extension for ``[(kind, value), ...]`` (kinds of :data:`SAN_KINDS`), or None.

    Raises:
        RequestError: a value the PowerShell refuses (the same message).
    """
    names: list[x509.GeneralName] = []
    for kind, value in sans:
        if kind == "dns":
            names.append(x509.DNSName(_ia5(kind, value)))
        elif kind == "ip":
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(value.strip().strip("[]"))))
            except ValueError:
                raise RequestError(f"Subject alternative name ip '{value}' is not an IP address.") from None
        elif kind == "email":
            names.append(x509.RFC822Name(_ia5(kind, value)))
        elif kind == "uri":
            names.append(x509.UniformResourceIdentifier(_ia5(kind, value)))
        elif kind == "upn":
            if not value or any(ord(c) < 0x20 for c in value):
                raise RequestError(
                    f"Subject alternative name upn '{value}' is empty or has control characters."
                )
            encoded = value.encode("utf-8")
            names.append(x509.OtherName(UPN_OID, b"\x0c" + _der_length(len(encoded)) + encoded))
        else:  # pragma: no cover - callers pass SAN_KINDS only
            raise RequestError(f"Subject alternative name type '{kind}' is not supported.")
    return x509.SubjectAlternativeName(names) if names else None


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


# -- key generation -------------------------------------------------------------------------


def check_provider_can_generate(provider: str, kind: str, algorithm: str, key_length: int,
                                exportable: bool) -> None:
    """Fail as key generation in ``provider`` fails (checked before any key is made).

    Raises:
        RequestError: ``WinCert.KeyGenerationFailed``.
    """
    family = "RSA" if algorithm == "RSA" else "ECDSA"
    if kind == "CSP":
        holds = CSP_KEY_ALGORITHM.get(provider, "RSA")
        if family != holds:
            raise RequestError(
                f"Cryptographic provider '{provider}' is a CryptoAPI provider that holds {holds} keys only;"
                f" it cannot generate a {algorithm} key. Use a key storage provider such as"
                " 'Microsoft Software Key Storage Provider'."
            )
    if provider in (SMART_CARD_CSP, SMART_CARD_KSP):
        raise certreq_failed(f"Certificate Request Processor: {NO_SMART_CARD} 0x8010000c (-2146435060"
                             " SCARD_E_NO_SMARTCARD)", -2146435060)
    if provider == PASSPORT_KSP or (
        provider == PLATFORM_KSP
        and (exportable or not ((family == "RSA" and key_length == 2048) or algorithm == "ECDSA_P256"))
    ):
        raise certreq_failed(f"Certificate Request Processor: {NOT_SUPPORTED} 0x80090029 (-2146893783"
                             " NTE_NOT_SUPPORTED)", -2146893783)


def generate_key(algorithm: str, key_length: int) -> CertificateIssuerPrivateKeyTypes:
    """A new key: RSA of ``key_length`` bits, or ECDSA P-256 / P-384."""
    if algorithm == "ECDSA_P256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ECDSA_P384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(65537, key_length)


def _spki(obj: x509.Certificate | x509.CertificateSigningRequest | CertificateIssuerPrivateKeyTypes) -> bytes:
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class CreatedRequest:
    """What ``New-WinCertCertificateRequest`` reports: the CSR (PEM) and created / existing."""

    request_id: str
    csr_pem: str
    outcome: str


@dataclass(frozen=True)
class PendingRequest:
    """A pending key: its dummy certificate in ``REQUEST`` and the request id it is tagged with
    (None for a pending request this orchestrator did not make)."""

    entry: StoredCertificate
    request_id: str | None


class PendingRequests:
    """The pending requests of one host (the ``REQUEST`` store plus the saved CSRs)."""

    def __init__(self, host: WindowsHost) -> None:
        self.host = host

    @property
    def directory(self) -> Path:
        """Where the CSR of each request id is kept (``<state_dir>/requests``)."""
        return self.host.state_dir / "requests"

    def _csr_file(self, request_id: str) -> Path:
        if not re.fullmatch(REQUEST_ID_PATTERN.removesuffix(r"\z"), request_id):
            raise ValueError(f"invalid request id {request_id!r}")
        return self.directory / f"{request_id}.csr"

    def saved_csr(self, request_id: str) -> str | None:
        """The CSR saved for ``request_id`` (PEM), or None."""
        try:
            return self._csr_file(request_id).read_text(encoding="ascii")
        except FileNotFoundError:
            return None

    def list(self) -> list[PendingRequest]:
        """Every pending key in ``REQUEST`` (entries with a private key)."""
        with self.host.lock:
            store = self.host.get_store(REQUEST_STORE)
            if store is None:
                return []
            return [
                PendingRequest(e, _tagged(e.friendly_name))
                for e in store.list()
                if e.has_private_key
            ]

    def find(self, request_id: str) -> PendingRequest | None:
        """The pending request tagged ``request_id``, or None."""
        return next((p for p in self.list() if p.request_id == request_id), None)

    def match(self, certificate: x509.Certificate) -> PendingRequest | None:
        """The pending request whose key is ``certificate``'s public key, or None."""
        wanted = _spki(certificate)
        return next((p for p in self.list() if _spki(p.entry.certificate()) == wanted), None)

    def existing(self, request_id: str) -> str | None:
        """The saved CSR of ``request_id`` when its pending key is still in REQUEST, else None."""
        with self.host.lock:
            pending = self.find(request_id)
            saved = self.saved_csr(request_id)
            if pending is None or saved is None:
                return None
            try:
                same = _spki(x509.load_pem_x509_csr(saved.encode())) == _spki(pending.entry.certificate())
            except ValueError:
                same = False
            return saved if same else None

    def create(
        self,
        request_id: str,
        subject: str,
        algorithm: str,
        key_length: int,
        provider: str,
        sans: list[tuple[str, str]],
        *,
        exportable: bool = False,
    ) -> CreatedRequest:
        """A new pending request, or the existing one for ``request_id`` (same CSR, no new key).

        A stale half (a tagged key without its saved CSR, or a saved CSR without its key, e.g.
        after the request was completed) is removed and a new request made.

        Raises:
            RequestError: ``WinCert.KeyGenerationFailed``.
        """
        host = self.host
        with host.lock:
            again = self.existing(request_id)
            if again is not None:
                return CreatedRequest(request_id, again, "existing")
            self.discard(request_id)
            name = subject_name(subject)
            extension = san_extension(sans)
            key = generate_key(algorithm, key_length)
            builder = x509.CertificateSigningRequestBuilder().subject_name(name)
            if extension is not None:
                builder = builder.add_extension(extension, critical=False)
            csr = builder.sign(key, hashes.SHA256())
            csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
            now = datetime.now(UTC).replace(microsecond=0)
            dummy = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=10))
                .not_valid_after(now + timedelta(days=365))
            )
            if extension is not None:
                dummy = dummy.add_extension(extension, critical=False)
            dummy_der = dummy.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
            host.create_store(REQUEST_STORE)
            self._save_csr(request_id, csr_pem)
            host.add_certificate(REQUEST_STORE, dummy_der, key, request_tag(request_id),
                                 key_info=KeyInfo(provider, exportable))
            return CreatedRequest(request_id, csr_pem, "created")

    def complete(self, pending: PendingRequest, der: bytes, store_path: str) -> StoredCertificate:
        """``certreq -accept -machine``, then the move to ``store_path``: the issued certificate
        gets the pending key (and its provider), the dummy certificate and the saved CSR go.

        Returns the entry in ``store_path``.
        """
        host = self.host
        with host.lock:
            info = host.key_info(pending.entry.thumbprint)
            key = pending.entry.private_key
            my = host.get_store("My")
            had_in_my = my is not None and my.get(StoredCertificate(der).thumbprint) is not None
            entry = host.add_certificate("My", der, key, "", create_store=True, key_info=info)
            if store_path.lower() != "my":
                entry = host.add_certificate(store_path, der, key, "", key_info=info)
                if not had_in_my:
                    host.remove_certificate("My", entry.thumbprint)
            host.remove_certificate(REQUEST_STORE, pending.entry.thumbprint)
            if pending.request_id is not None:
                self.forget(pending.request_id)
            return entry

    def accepted(self, thumbprint: str, store_path: str) -> StoredCertificate | None:
        """The certificate ``thumbprint`` with its private key and a request tag in ``My`` when
        ``store_path`` is not ``My`` (accepted by a completion that did not get to the move), else
        None."""
        if store_path.lower() == "my":
            return None
        with self.host.lock:
            my = self.host.get_store("My")
            entry = my.get(thumbprint) if my is not None else None
            # only a copy certreq tagged for a request counts; any other copy in My stays
            tagged = entry is not None and _tagged(entry.friendly_name) is not None
            return entry if entry is not None and entry.has_private_key and tagged else None

    def move_accepted(self, accepted: StoredCertificate, pending: PendingRequest | None,
                      store_path: str) -> tuple[StoredCertificate, str | None]:
        """Finish a completion interrupted after ``certreq -accept`` (``accepted`` is the copy in
        ``My``, see :meth:`accepted`): no second accept; the move to ``store_path`` (without the
        tag), the ``My`` copy removed, the dummy certificate (if still there) and the saved CSR
        removed. Returns the entry in ``store_path`` and the request id (the tag of the ``My``
        copy, else of the dummy; None without a tag)."""
        host = self.host
        with host.lock:
            request_id = _tagged(accepted.friendly_name)
            if request_id is None and pending is not None:
                request_id = pending.request_id
            info = host.key_info(accepted.thumbprint)
            host.remove_certificate(store_path, accepted.thumbprint)  # step 7 clears any friendly name
            entry = host.add_certificate(store_path, accepted.der, accepted.private_key, "", key_info=info)
            host.remove_certificate("My", accepted.thumbprint)
            self._finish(pending, request_id)
            return entry, request_id

    def drop_leftover(self, certificate: x509.Certificate, thumbprint: str, store_path: str) -> str | None:
        """Finish a completion interrupted between the ``Add`` to ``store_path`` (which holds the
        certificate with its key) and the ``Remove`` from ``My``: when ``store_path`` is not ``My``
        and ``My`` still holds it with its key, that copy goes, the tag in ``store_path`` is
        cleared, the dummy certificate (if still there) and the saved CSR are removed. Returns the
        request id (from the tag in the store path, of the ``My`` copy, or of the dummy), None
        when there was no leftover or no tag."""
        host = self.host
        with host.lock:
            leftover = self.accepted(thumbprint, store_path)
            if leftover is None:
                return None
            store = host.get_store(store_path)
            present = store.get(thumbprint) if store is not None else None
            assert present is not None and present.private_key is not None
            request_id = _tagged(present.friendly_name) or _tagged(leftover.friendly_name)
            host.remove_certificate("My", thumbprint)
            if _tagged(present.friendly_name) is not None:
                info = host.key_info(thumbprint)
                host.remove_certificate(store_path, thumbprint)
                host.add_certificate(store_path, present.der, present.private_key, "", key_info=info)
            pending = self.match(certificate)
            if request_id is None and pending is not None:
                request_id = pending.request_id
            self._finish(pending, request_id)
            return request_id

    def _finish(self, pending: PendingRequest | None, request_id: str | None) -> None:
        """The pending request is done: its dummy certificate (if still there) and saved CSR go."""
        if pending is not None:
            self.host.remove_certificate(REQUEST_STORE, pending.entry.thumbprint)
        if request_id is not None:
            self.forget(request_id)

    def discard(self, request_id: str) -> None:
        """Remove what is left of a request for ``request_id`` (its pending key, its saved CSR)."""
        with self.host.lock:
            stale = self.find(request_id)
            if stale is not None:
                self.host.remove_certificate(REQUEST_STORE, stale.entry.thumbprint)
            self.forget(request_id)

    def forget(self, request_id: str) -> None:
        """Delete the saved CSR of ``request_id`` (if any)."""
        with contextlib.suppress(FileNotFoundError):
            self._csr_file(request_id).unlink()

    def _save_csr(self, request_id: str, csr_pem: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._csr_file(request_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(csr_pem, encoding="ascii")
        os.replace(tmp, path)

