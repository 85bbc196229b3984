"""Simulator implementation of ``worker/powershell/Enrollment.ps1``.

``New-WinCertCertificateRequest`` (on-device key generation, as ``certreq -new -machine``) and
``Install-WinCertSignedCertificate`` (pairing the issued certificate with its pending key, as
``certreq -accept -machine``), with the outputs, error ids and messages of the PowerShell
(docs/powershell-functions.md, "Enrollment.ps1"). The key, the CSR and the pending request are
real (:mod:`simulator.windows.requests`): the CSR verifies with its own key and an installed
certificate carries the very key that was generated for it.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from simulator.commands.certificates import (
    _bytes_parameter,
    import_verification_failed,
    key_is_usable,
    pfx_import_failed,
    provider_not_found,
)
from simulator.commands.iis import _validation_error, to_int, validate_pattern
from simulator.commands.inventory import store_not_found, validate_not_null_or_empty
from simulator.commands.registry import REGISTRY
from simulator.runtime import CommandContext, CommandError
from simulator.windows.certstore import StoredCertificate
from simulator.windows.providers import find_provider
from simulator.windows.requests import (
    KEY_ALGORITHMS,
    REQUEST_ID_PATTERN,
    RSA_KEY_LENGTHS,
    PendingRequests,
    RequestError,
    check_provider_can_generate,
    san_extension,
    subject_name,
)

NEW = "New-WinCertCertificateRequest"
INSTALL = "Install-WinCertSignedCertificate"
_SAN_PARAMETERS = (
    ("DnsName", "dns"), ("IpAddress", "ip"), ("Email", "email"), ("Upn", "upn"), ("Uri", "uri")
)
_CONTROL = {chr(c) for c in range(0x20)} | {"\x7f"}


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def key_generation_failed(message: str, target: str) -> CommandError:
    """``WinCert.KeyGenerationFailed``: the request cannot be made (certreq's text when it ran)."""
    return CommandError(
        message,
        "WinCert.KeyGenerationFailed",
        "InvalidOperation",
        target=target,
        exception_type="System.InvalidOperationException",
    )


def no_matching_request(thumbprint: str, subject: str) -> CommandError:
    """``WinCert.NoMatchingRequest``: no pending key in REQUEST has the certificate's public key."""
    return CommandError(
        f"Certificate {thumbprint} ({subject}) matches no pending request: no key in LocalMachine\\REQUEST"
        " has its public key.",
        "WinCert.NoMatchingRequest",
        "ObjectNotFound",
        target=thumbprint,
        exception_type="System.Management.Automation.ItemNotFoundException",
    )


def _string_array(value: Any) -> list[str]:
    """A ``[string[]]`` parameter: one string or a list of them (None → empty)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return ["" if v is None else str(v) for v in value]
    return [str(value)]


def _validate_set(command: str, parameter: str, value: Any, allowed: tuple[str, ...]) -> str:
    """What ``[ValidateSet(...)]`` does at binding (case-insensitive; returns the set's spelling)."""
    text = "" if value is None else str(value)
    for item in allowed:
        if item.lower() == text.lower():
            return item
    raise _validation_error(
        command,
        f"Cannot validate argument on parameter '{parameter}'. The argument \"{text}\" does not belong to"
        f" the set \"{','.join(allowed)}\" specified by the ValidateSet attribute. Supply an argument that"
        " is in the set and then try the command again.",
    )


# -- New-WinCertCertificateRequest -------------------------------------------------------------


@REGISTRY.register(
    NEW,
    parameters=("RequestId", "Subject", "KeyAlgorithm", "ProviderName", "KeyLength", "DnsName", "IpAddress",
                "Email", "Upn", "Uri", "Exportable"),
    mandatory=("RequestId", "Subject", "KeyAlgorithm", "ProviderName"),
    switches=("Exportable",),
)
def new_wincert_certificate_request(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Create a key pair in the machine key store of ``-ProviderName`` and a PKCS#10 request.

    Order: parameter binding (``RequestId`` pattern, ``KeyAlgorithm`` set), provider registered
    (``WinCert.ProviderNotFound``), an existing request for ``RequestId`` (same CSR, ``existing``,
    no new key), then the request file's values (no control characters), the key length for
    the algorithm, the SAN values, whether the provider can generate the key, and the subject
    (certreq's ``CRYPT_E_INVALID_X500_STRING``): each ``WinCert.KeyGenerationFailed``.
    """
    request_id = validate_pattern(NEW, "RequestId", params.get("RequestId"), REQUEST_ID_PATTERN)
    subject = validate_not_null_or_empty(NEW, "Subject", params.get("Subject"))
    algorithm = _validate_set(NEW, "KeyAlgorithm", params.get("KeyAlgorithm"), KEY_ALGORITHMS)
    provider_name = validate_not_null_or_empty(NEW, "ProviderName", params.get("ProviderName"))
    key_length = to_int(NEW, "KeyLength", params["KeyLength"]) if params.get("KeyLength") is not None else 0
    sans = [(kind, value) for name, kind in _SAN_PARAMETERS for value in _string_array(params.get(name))]
    exportable = bool(params.get("Exportable"))
    host = ctx.host

    with host.lock:
        provider = find_provider([(p.name, p.kind) for p in host.config.providers], provider_name)
        if provider is None:
            raise provider_not_found(provider_name.strip())
        requests = PendingRequests(host)
        existing = requests.existing(request_id)
        if existing is not None:
            ctx.write_output(_json({"RequestId": request_id, "Csr": existing, "Outcome": "existing"}))
            return
        requests.discard(request_id)  # a stale half: a tagged key without its CSR, or the reverse
        try:
            if any(c in _CONTROL for c in subject + provider_name + "".join(v for _, v in sans)):
                raise RequestError(
                    "The subject, the provider name and the subject alternative names must not contain"
                    " control characters (they would break the request file)."
                )
            if algorithm == "RSA":
                key_length = key_length or 2048
                if key_length not in RSA_KEY_LENGTHS:
                    raise RequestError(f"KeyLength {key_length} is not supported for RSA keys; use 2048, 3072"
                                       " or 4096.")
            else:
                bits = 256 if algorithm == "ECDSA_P256" else 384
                if key_length not in (0, bits):
                    raise RequestError(f"KeyLength {key_length} does not fit {algorithm}; leave it out (the"
                                       " curve fixes the key size).")
                key_length = bits
            san_extension(sans)
            check_provider_can_generate(provider[0], provider[1], algorithm, key_length, exportable)
            subject_name(subject)
            created = requests.create(request_id, subject, algorithm, key_length, provider[0], sans,
                                      exportable=exportable)
        except RequestError as exc:
            raise key_generation_failed(exc.message, request_id) from None
        ctx.write_output(_json({"RequestId": request_id, "Csr": created.csr_pem, "Outcome": created.outcome}))


# -- Install-WinCertSignedCertificate ------------------------------------------------------------


def _certificate(data: bytes, target: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError:
            raise pfx_import_failed(
                "The certificate data could not be imported: Cannot find the requested object.", target
            ) from None


@REGISTRY.register(
    INSTALL,
    parameters=("StorePath", "CertificateData", "ChainData"),
    mandatory=("StorePath", "CertificateData"),
)
def install_wincert_signed_certificate(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Install the issued certificate so it pairs with its pending key, in ``LocalMachine\\<StorePath>``.

    Order: store exists (``WinCert.StoreNotFound``); the data is a certificate
    (``WinCert.PfxImportFailed``); already in the store with a key → ``already_present``
    (a redelivered completion: nothing changes, except that a copy with the key still in ``My``
    when the store path is not ``My``, the leftover of an interrupted move, is removed with the
    rest of its request; ``RequestId`` is then its tag's); chain certificates to ``CA`` /
    ``Root`` (self-signed) when absent; when the store path is not ``My`` and ``My`` already
    holds the certificate with its key (a completion interrupted after the accept), no accept:
    moved from there (``installed``); else the pending key with the certificate's public key
    (``WinCert.NoMatchingRequest``) and the accept (into ``My`` with the key, then moved to the
    store path); the dummy certificate and the saved CSR removed; the store re-read: the
    certificate must be listed with a usable key (``WinCert.ImportVerificationFailed``).
    """
    store_path = validate_not_null_or_empty(INSTALL, "StorePath", params.get("StorePath"))
    data = _bytes_parameter(INSTALL, "CertificateData", params.get("CertificateData"))
    chain_raw = params.get("ChainData")
    if chain_raw is None:
        chain_items: list[Any] = []
    elif isinstance(chain_raw, list) and chain_raw and not isinstance(chain_raw[0], int):
        chain_items = chain_raw  # byte[][]
    else:
        chain_items = [chain_raw]  # one byte[] binds as a one-element byte[][]
    chain = [_bytes_parameter(INSTALL, "ChainData", item) for item in chain_items]
    host = ctx.host
    with host.lock:
        store = host.get_store(store_path)
        if store is None:
            raise store_not_found(store_path)
        cert = _certificate(data, store_path)
        der = cert.public_bytes(Encoding.DER)
        thumbprint = StoredCertificate(der).thumbprint
        requests = PendingRequests(host)
        present = store.get(thumbprint)
        if present is not None and present.has_private_key:
            leftover_id = requests.drop_leftover(cert, thumbprint, store_path)
            ctx.write_output(_json({"Thumbprint": thumbprint, "Outcome": "already_present",
                                    "HasPrivateKey": True, "RequestId": leftover_id}))
            return
        for item in chain:
            chain_cert = _certificate(item, store_path)
            target = "Root" if chain_cert.issuer == chain_cert.subject else "CA"
            chain_der = chain_cert.public_bytes(Encoding.DER)
            target_store = host.get_store(target)
            if target_store is None or target_store.get(StoredCertificate(chain_der).thumbprint) is None:
                host.add_certificate(target, chain_der, create_store=True)
        accepted = requests.accepted(thumbprint, store_path)
        pending = requests.match(cert)
        if accepted is not None:
            entry, request_id = requests.move_accepted(accepted, pending, store.name)
        elif pending is None:
            raise no_matching_request(thumbprint, cert.subject.rfc4514_string())
        else:
            entry, request_id = requests.complete(pending, der, store.name), pending.request_id
        fresh = host.get_store(store.name)
        listed = fresh.get(thumbprint) if fresh is not None else None
        if listed is None or not listed.has_private_key or not key_is_usable(listed):
            raise import_verification_failed(
                f"Certificate {thumbprint} was installed into LocalMachine\\{store_path} but the store"
                " does not show it with a usable private key.",
                thumbprint,
            )
        ctx.write_output(_json({"Thumbprint": entry.thumbprint, "Outcome": "installed", "HasPrivateKey": True,
                                "RequestId": request_id}))
