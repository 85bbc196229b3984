"""Simulator implementation of ``worker/powershell/Certificates.ps1``.

``Get-WinCertHostInfo``, ``Import-WinCertCertificate`` and ``Remove-WinCertCertificate``, with
the outputs, terminating error ids and messages of the PowerShell (docs/powershell-functions.md).
How the host reads the certificate data (passwords, PBES2 on old builds, iteration limits, the
primary certificate) is :mod:`simulator.windows.pfx`; which provider can hold which key is
:mod:`simulator.windows.providers`.

Thumbprint parameters are normalised as the PowerShell does: every whitespace character and the
invisible left-to-right / right-to-left marks that certlm.msc copies are removed, the rest is
upper-cased; the value is then compared exactly (never as a wildcard or a path).

Every change runs under the host lock, so a concurrent call sees the store before or after an
import, never in between (Windows gives no such guarantee; it only makes tests deterministic).
"""

from __future__ import annotations

import json
import re
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from simulator.commands.inventory import store_not_found, validate_not_null_or_empty
from simulator.commands.registry import REGISTRY
from simulator.runtime import CommandContext, CommandError, SecureText
from simulator.windows.certstore import StoredCertificate
from simulator.windows.host import KeyContainerError
from simulator.windows.pfx import PfxImportError, ReadCertificate, read_certificate_data
from simulator.windows.providers import (
    KeyInfo,
    default_provider,
    find_provider,
    provider_import_failure,
    provider_type_mismatch,
)

_THUMBPRINT_NOISE = re.compile(r"[\s\u200e\u200f]")
_PROBE = b"WinCert Orchestrator key check"


def normalize_thumbprint(value: str) -> str:
    """``$Thumbprint -replace '[\\s\\u200E\\u200F]', ''`` upper-cased (invariant)."""
    return _THUMBPRINT_NOISE.sub("", value).upper()


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- errors (same ids, categories and texts as Certificates.ps1) ------------------------------


def provider_not_found(name: str) -> CommandError:
    """``WinCert.ProviderNotFound``: ``-ProviderName`` names no CSP or KSP registered on the host."""
    return CommandError(
        f"Cryptographic provider '{name}' is not registered on this host (Get-WinCertHostInfo lists"
        " the installed CSPs and KSPs).",
        "WinCert.ProviderNotFound",
        "ObjectNotFound",
        target=name,
        exception_type="System.Management.Automation.ItemNotFoundException",
    )


def pfx_import_failed(message: str, target: str) -> CommandError:
    """``WinCert.PfxImportFailed``: the host could not read or place the certificate data."""
    return CommandError(
        message,
        "WinCert.PfxImportFailed",
        "InvalidData",
        target=target,
        exception_type="System.Security.Cryptography.CryptographicException",
    )


def import_verification_failed(message: str, target: str) -> CommandError:
    """``WinCert.ImportVerificationFailed``: the re-read store did not show what was imported."""
    return CommandError(
        message,
        "WinCert.ImportVerificationFailed",
        "InvalidResult",
        target=target,
        exception_type="System.InvalidOperationException",
    )


def _bytes_parameter(command: str, parameter: str, value: Any) -> bytes:
    """What binding a ``[ValidateNotNullOrEmpty()][byte[]]`` parameter accepts: a byte array
    (or a list of integers 0-255, which PowerShell converts)."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                                         for v in value):
        data = bytes(value)
    elif value is None:
        data = b""
    else:
        raise CommandError(
            f"Cannot process argument transformation on parameter '{parameter}'. Cannot convert the"
            f" value of type \"{type(value).__name__}\" to type \"System.Byte[]\".",
            f"ParameterArgumentTransformationError,{command}",
            "InvalidData",
            exception_type="System.Management.Automation.ParameterBindingArgumentTransformationException",
        )
    if not data:
        validate_not_null_or_empty(command, parameter, None)
    return data


def _secure_string_parameter(command: str, parameter: str, value: Any) -> str | None:
    """A ``[securestring]`` parameter: the PSRP layer hands over the decrypted text (or None).

    A plain string is refused exactly as Windows refuses it — including the value in the
    message, which is why the worker must always send SecureStrings.
    """
    if value is None or isinstance(value, SecureText):
        return value
    shown = f'"{value}" value' if isinstance(value, str) else "value"
    net_type = "System.String" if isinstance(value, str) else type(value).__name__
    raise CommandError(
        f"Cannot process argument transformation on parameter '{parameter}'. Cannot convert the {shown}"
        f" of type \"{net_type}\" to type \"System.Security.SecureString\".",
        f"ParameterArgumentTransformationError,{command}",
        "InvalidData",
        exception_type="System.Management.Automation.ParameterBindingArgumentTransformationException",
    )


def key_is_usable(entry: StoredCertificate) -> bool:
    """Whether the entry's private key signs data its certificate's public key verifies (the
    PowerShell does the same with the .NET key objects; DSA there only opens the key)."""
    key = entry.private_key
    if key is None:
        return False
    public = entry.certificate().public_key()
    try:
        if isinstance(key, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey):
            # SHA-1 as in the PowerShell (PROV_RSA_FULL CSP keys cannot sign SHA-256 there).
            public.verify(key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA1()), _PROBE,  # noqa: S303
                          padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(key.sign(_PROBE, ec.ECDSA(hashes.SHA256())), _PROBE, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, dsa.DSAPrivateKey) and isinstance(public, dsa.DSAPublicKey):
            public.verify(key.sign(_PROBE, hashes.SHA256()), _PROBE, hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) and isinstance(
            public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
        ):
            public.verify(key.sign(_PROBE), _PROBE)
        else:
            return False
    except Exception:  # an InvalidSignature or a key the platform cannot use
        return False
    return True


def _provider_failed(name: str, reason: str, target: str) -> CommandError:
    message = f"The certificate data could not be imported into provider '{name}': {reason}"
    return pfx_import_failed(message, target)


def _key_placement(
    ctx: CommandContext, key: PrivateKeyTypes, provider: tuple[str, str] | None, csp_attribute: str | None,
    exportable: bool, target: str,
) -> KeyInfo:
    """The provider a key goes to: ``-ProviderName`` (failing as certutil fails when it cannot
    take the key), else the file's CSP-name attribute when that provider is registered and can
    hold the key, else the Windows default for its type."""
    if provider is not None:
        name, kind = provider
        reason = provider_import_failure(name, kind, key, exportable)
        if reason is not None:
            raise _provider_failed(name, reason, target)
        return KeyInfo(name, exportable)
    if csp_attribute:
        found = find_provider([(p.name, p.kind) for p in ctx.host.config.providers], csp_attribute)
        if (found is not None and provider_type_mismatch(found[0], found[1], key) is None
                and provider_import_failure(found[0], found[1], key, exportable) is None):
            return KeyInfo(found[0], exportable)
    return KeyInfo(default_provider(key), exportable)


# -- Get-WinCertHostInfo ------------------------------------------------------------------


@REGISTRY.register("Get-WinCertHostInfo")
def get_wincert_host_info(ctx: CommandContext, params: dict[str, Any]) -> None:
    """One compact JSON object: ComputerName (upper case, as ``$env:COMPUTERNAME``), OsBuild,
    IisVersion (``"10.0"`` or null) and Providers (``{Name, Kind}``; CSPs, then KSPs, each sorted by
    name case-insensitively)."""
    host = ctx.host
    providers = sorted(((p.name, p.kind) for p in host.config.providers), key=lambda p: (p[1], p[0].upper()))
    ctx.write_output(_json({
        "ComputerName": host.name.upper(),
        "OsBuild": int(host.os_build),
        "IisVersion": getattr(host, "iis_version", None),
        "Providers": [{"Name": name, "Kind": kind} for name, kind in providers],
    }))


# -- Import-WinCertCertificate --------------------------------------------------------------


IMPORT = "Import-WinCertCertificate"


@REGISTRY.register(
    IMPORT,
    parameters=("StorePath", "CertificateData", "ExpectedThumbprint", "Password", "ProviderName",
                "Exportable", "Overwrite"),
    mandatory=("StorePath", "CertificateData", "ExpectedThumbprint"),
    switches=("Exportable", "Overwrite"),
)
def import_wincert_certificate(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Import one certificate (with its key, if the data carries one) into ``LocalMachine\\<StorePath>``.

    Order of checks: store exists (``WinCert.StoreNotFound``), ``-ProviderName`` is registered
    (``WinCert.ProviderNotFound``; blank = not given), the data is readable and holds
    ``-ExpectedThumbprint`` (``WinCert.PfxImportFailed``), a CSP's type fits the key
    (``WinCert.PfxImportFailed`` naming the provider). Then ``already_present`` (present with a
    key, or the input has no key, and no ``-Overwrite``: nothing changes). Else the import: a
    provider that cannot take the key at import time (no smart card, TPM limits; certutil's
    failure on Windows) gives ``WinCert.PfxImportFailed`` naming it, nothing changed; then a
    re-read of the store and a signature check with the stored key. When verification fails
    the change is undone and ``WinCert.ImportVerificationFailed`` raised.

    A certificate without a key in the data is imported as a certificate only (``-ProviderName``
    is then checked but has nothing to hold). A key-bearing certificate that is not the data's
    primary one (the first with a key) is refused: ``X509Certificate2`` and ``certutil
    -importPFX ... NoChain`` place only that one's key.
    """
    store_path = validate_not_null_or_empty(IMPORT, "StorePath", params.get("StorePath"))
    data = _bytes_parameter(IMPORT, "CertificateData", params.get("CertificateData"))
    expected_raw = validate_not_null_or_empty(IMPORT, "ExpectedThumbprint", params.get("ExpectedThumbprint"))
    password = _secure_string_parameter(IMPORT, "Password", params.get("Password"))
    provider_name = str(params.get("ProviderName") or "").strip()
    exportable = bool(params.get("Exportable"))
    overwrite = bool(params.get("Overwrite"))
    expected = normalize_thumbprint(expected_raw)
    host = ctx.host

    with host.lock:
        store = host.get_store(store_path)
        if store is None:
            raise store_not_found(store_path)
        provider = None
        if provider_name:
            provider = find_provider([(p.name, p.kind) for p in host.config.providers], provider_name)
            if provider is None:
                raise provider_not_found(provider_name)
        try:
            read = read_certificate_data(data, password, host.os_build)
        except PfxImportError as exc:
            raise pfx_import_failed(f"The certificate data could not be imported: {exc}", expected) from None
        selected = read.find(expected) if expected else None
        if selected is None:
            listed = ", ".join(c.thumbprint for c in read.certificates)
            raise pfx_import_failed(
                f"The certificate data does not contain the certificate '{expected}' (it contains {listed}).",
                expected,
            )
        key = selected.private_key
        if key is not None and selected is not read.primary:
            raise pfx_import_failed(
                f"The certificate {selected.thumbprint} carries a private key but is not the first"
                " key-bearing certificate of the PKCS#12 data; import it from a PKCS#12 file of its own.",
                expected,
            )
        if key is not None and provider is not None:
            mismatch = provider_type_mismatch(provider[0], provider[1], key)
            if mismatch is not None:
                raise _provider_failed(provider[0], mismatch, expected)

        existing = store.get(selected.thumbprint)
        if existing is not None and (existing.has_private_key or key is None) and not overwrite:
            ctx.write_output(_json({"Thumbprint": selected.thumbprint, "Outcome": "already_present",
                                    "HasPrivateKey": existing.has_private_key}))
            return
        key_info = _key_placement(ctx, key, provider, read.csp_name, exportable, expected) if key else None
        outcome = "replaced" if existing is not None else "added"
        previous_info = host.key_info(selected.thumbprint) if existing is not None else None
        host.add_certificate(store.name, selected.der, key, selected.friendly_name, key_info=key_info)
        problem = _verify(host, store.name, selected, key is not None)
        if problem is not None:
            _roll_back(host, store.name, selected.thumbprint, existing, previous_info)
            raise import_verification_failed(
                f"Certificate {selected.thumbprint} was imported into LocalMachine\\{store_path} but"
                f" {problem}; the import was rolled back.",
                selected.thumbprint,
            )
        entry = store.get(selected.thumbprint)
        ctx.write_output(_json({"Thumbprint": selected.thumbprint, "Outcome": outcome,
                                "HasPrivateKey": bool(entry is not None and entry.has_private_key)}))


def _verify(host: Any, store_name: str, selected: ReadCertificate, with_key: bool) -> str | None:
    """Re-read the store: None when the import shows, else what is wrong (for the message)."""
    store = host.get_store(store_name)
    entry = store.get(selected.thumbprint) if store is not None else None
    if entry is None:
        return "the store does not list it afterwards"
    if with_key and not entry.has_private_key:
        return "the store shows it without a private key"
    if with_key and not key_is_usable(entry):
        return "its private key cannot be used"
    return None


def _roll_back(
    host: Any, store_name: str, thumbprint: str, previous: StoredCertificate | None,
    previous_info: KeyInfo | None,
) -> None:
    """Undo what the import changed: remove the certificate, and put back the entry it replaced."""
    host.remove_certificate(store_name, thumbprint)
    if previous is not None:
        host.add_certificate(store_name, previous.der, previous.private_key, previous.friendly_name,
                             key_info=previous_info)


# -- Remove-WinCertCertificate ---------------------------------------------------------------


REMOVE = "Remove-WinCertCertificate"


@REGISTRY.register(
    REMOVE,
    parameters=("StorePath", "Thumbprint", "IfUnused"),
    mandatory=("StorePath", "Thumbprint"),
    switches=("IfUnused",),
)
def remove_wincert_certificate(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Remove one certificate from ``LocalMachine\\<StorePath>`` (idempotent).

    ``removed`` also deletes the entry's key container unless another certificate in any
    LocalMachine store names the same container, whatever its public key (the host models key
    containers by name; see :meth:`WindowsHost.delete_key_container`). A container that cannot
    be deleted is the warning ``Certificate <T> was removed but its private key could not be
    deleted: <reason>`` (the certificate stays removed). ``already_absent`` when the thumbprint
    is not in the store; with ``-IfUnused``, ``in_use`` (nothing changed) when an IIS https
    binding or a SQL Server instance uses the thumbprint, ``UsedBy`` naming each user.
    """
    store_path = validate_not_null_or_empty(REMOVE, "StorePath", params.get("StorePath"))
    given = validate_not_null_or_empty(REMOVE, "Thumbprint", params.get("Thumbprint"))
    thumbprint = normalize_thumbprint(given)
    host = ctx.host
    with host.lock:
        store = host.get_store(store_path)
        if store is None:
            raise store_not_found(store_path)
        entry = store.get(thumbprint) if thumbprint else None
        if entry is None:
            ctx.write_output(_json({"Thumbprint": thumbprint, "Outcome": "already_absent", "UsedBy": []}))
            return
        if params.get("IfUnused"):
            usage = getattr(host, "certificate_usage", None)
            used_by = list(usage(entry.thumbprint)) if usage is not None else []
            if used_by:
                ctx.write_output(_json({"Thumbprint": entry.thumbprint, "Outcome": "in_use",
                                        "UsedBy": used_by}))
                return
        host.remove_certificate(store.name, entry.thumbprint)
        container = entry.key_container
        if container and not host.key_container_users(container):
            try:
                host.delete_key_container(container)
            except KeyContainerError as exc:
                ctx.write_warning(f"Certificate {entry.thumbprint} was removed but its private key could not"
                                  f" be deleted: {exc}")
        ctx.write_output(_json({"Thumbprint": entry.thumbprint, "Outcome": "removed", "UsedBy": []}))
