"""Certificate steps shared by the Add and Remove jobs of every store type.

* :func:`prepare` — before any remote call: open the sealed certificate and password
  (``WINCERT_SECRET_KEYS``), sniff and parse the file (:mod:`producer.certinput`): thumbprint
  computed here, leaf by key match, password checked, Windows' iteration limit;
* :func:`host_info` — ``Get-WinCertHostInfo``: OS build, IIS version, CSP/KSP list;
* :func:`import_certificate` — host-dependent checks (PBES2 on hosts before Server 2019,
  provider name against the host's list, not localized tool output), then
  ``Import-WinCertCertificate``, which confirms the exact thumbprint (and a usable key) on the
  host or rolls back; optional chain certificates to ``CA`` / ``Root``;
* :func:`remove_certificate` — ``Remove-WinCertCertificate`` (optionally only when unused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from producer.certinput import (
    CertificateInputError,
    ParsedCertificate,
    parse_certificate_input,
    thumbprint_of,
)
from producer.codes import ResultCode
from producer.messages import AddJob, CertificateData
from producer.secrets import SecretKeyError, decrypt_secret
from worker import journal
from worker.jobs.outcome import JobStepError
from worker.remote.errors import RemoteCommandError
from worker.remote.invoke import SecureString
from worker.remote.session import RemoteSession
from worker.settings import WorkerSettings

WINDOWS_SERVER_2019_BUILD = 17763


@dataclass(frozen=True)
class PreparedCertificate:
    """A certificate checked on the worker: the parsed file and the password to send.

    ``password`` None means "no password" (distinct from ``""``, the empty password).
    """

    parsed: ParsedCertificate
    raw: bytes | str = field(repr=False)
    password: str | None = field(repr=False)

    @property
    def thumbprint(self) -> str:
        """The leaf's thumbprint (40 upper-case hex), computed on the worker."""
        return self.parsed.thumbprint


@dataclass(frozen=True)
class HostInfo:
    """What ``Get-WinCertHostInfo`` reports."""

    computer_name: str
    os_build: int
    iis_version: str | None
    providers: list[tuple[str, str]]  # (name, "CSP" | "KSP")


@dataclass(frozen=True)
class Imported:
    """``Import-WinCertCertificate``'s answer: ``outcome`` added / replaced / already_present."""

    thumbprint: str
    outcome: str
    has_private_key: bool
    warnings: list[str]


def _open(
    value_encrypted: str | None, value_plaintext: Any, what: str, settings: WorkerSettings
) -> str | None:
    if value_encrypted is not None:
        if settings.secret_keys is None:
            raise JobStepError(
                ResultCode.CERTIFICATE_UNAVAILABLE,
                f"the job's {what} is encrypted but WINCERT_SECRET_KEYS is not set on the worker; set"
                " it to the Fernet key(s) the producer uses",
            )
        try:
            return decrypt_secret(value_encrypted, settings.secret_keys.get_secret_value())
        except SecretKeyError as exc:
            raise JobStepError(ResultCode.CERTIFICATE_UNAVAILABLE, f"the job's {what}: {exc}") from None
    if value_plaintext is None:
        return None
    if not settings.allow_plaintext_secrets:
        raise JobStepError(
            ResultCode.CERTIFICATE_UNAVAILABLE,
            f"the job carries its {what} in plaintext, which this worker refuses; send it encrypted"
            " (WINCERT_SECRET_KEYS) or set WINCERT_ALLOW_PLAINTEXT_SECRETS=true (development only)",
        )
    return str(value_plaintext.get_secret_value())


def open_certificate_data(data: CertificateData, settings: WorkerSettings) -> tuple[str, str | None]:
    """Decrypt the job's certificate file text and PKCS#12 password.

    Returns ``(contents, password)``: the file as base64 or PEM text (what the producer sealed);
    password None for "no password".

    Raises:
        JobStepError: ``certificate_unavailable``.
    """
    contents = _open(data.contents_encrypted, data.contents_plaintext, "certificate", settings)
    password = _open(data.password_encrypted, data.password_plaintext, "certificate password", settings)
    assert contents is not None  # CertificateData requires one contents field
    return contents, password


def prepare(job: AddJob, settings: WorkerSettings) -> PreparedCertificate:
    """Everything the worker checks before it contacts the host.

    Raises:
        JobStepError: ``certificate_unavailable`` or a certificate input code
            (``invalid_certificate_data``, ``pfx_password_incorrect``, ...).
    """
    contents, password = open_certificate_data(job.certificate, settings)
    try:
        parsed = parse_certificate_input(contents, password)
    except CertificateInputError as exc:
        raise JobStepError(exc.code, exc.message) from None
    return PreparedCertificate(parsed, contents, password)


def host_info(session: RemoteSession) -> HostInfo:
    """Run ``Get-WinCertHostInfo`` and parse its one JSON object."""
    output = session.invoke("Get-WinCertHostInfo", {}).output
    try:
        data = json.loads(output[0])
        return HostInfo(
            computer_name=str(data.get("ComputerName") or ""),
            os_build=int(data["OsBuild"]),
            iis_version=str(data["IisVersion"]) if data.get("IisVersion") else None,
            providers=[(str(p["Name"]), str(p.get("Kind") or "")) for p in data.get("Providers") or []],
        )
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise JobStepError(
            ResultCode.REMOTE_ERROR, f"Get-WinCertHostInfo returned an unreadable answer ({exc})"
        ) from None


def for_host(prepared: PreparedCertificate, job: AddJob, info: HostInfo) -> ParsedCertificate:
    """The parsed certificate as it must be sent to this host: PBES2/AES files are refused for
    hosts older than Server 2019 unless the job asks to re-wrap them with 3DES/SHA1. Cert-only
    input is sent as DER, so its PKCS#12 protection does not matter.

    Raises:
        JobStepError: ``pfx_algorithm_unsupported_by_host``.
    """
    pbe = prepared.parsed.pbe
    if pbe is None or not pbe.uses_pbes2 or info.os_build >= WINDOWS_SERVER_2019_BUILD:
        return prepared.parsed
    if not prepared.parsed.has_private_key:
        return prepared.parsed  # cert-only: the host gets the DER certificate, not the PKCS#12
    try:
        return parse_certificate_input(
            prepared.raw, prepared.password, os_build=info.os_build, rewrap_legacy=job.rewrap_legacy_pfx
        )
    except CertificateInputError as exc:
        raise JobStepError(exc.code, exc.message) from None


def check_provider(info: HostInfo, provider: str | None, key_algorithm: str | None = None) -> None:
    """Fail unless ``provider`` is installed on the host (case-insensitive, trimmed) and can hold
    a ``key_algorithm`` key (``RSA``, ``ECDSA``, ``DSA``, ...): legacy CAPI CSPs hold RSA keys
    only (the DSS CSPs DSA keys); KSPs (CNG) hold RSA and ECDSA keys.

    Raises:
        JobStepError: ``provider_not_found``, listing the host's providers.
    """
    if provider is None:
        return
    wanted = provider.strip().lower()
    found = next(((n, k) for n, k in info.providers if n.strip().lower() == wanted), None)
    if found is None:
        names = [name for name, _ in info.providers]
        raise JobStepError(
            ResultCode.PROVIDER_NOT_FOUND,
            f"ProviderName {provider!r} is not installed on {info.computer_name or 'the host'}; installed"
            f" providers: {', '.join(sorted(names)) or 'none reported'}",
        )
    name, kind = found
    if key_algorithm is None or kind.upper() != "CSP":
        return
    holds = "DSA" if "dss" in name.lower() else "RSA"
    if key_algorithm.upper() != holds:
        ksps = sorted(n for n, k in info.providers if k.upper() == "KSP")
        raise JobStepError(
            ResultCode.PROVIDER_NOT_FOUND,
            f"ProviderName {name!r} is a CryptoAPI CSP, which cannot hold {key_algorithm} keys (only"
            f" {holds}); use a key storage provider such as {', '.join(ksps[:2]) or 'the Software KSP'}",
        )


def _import(
    session: RemoteSession,
    store_path: str,
    data: bytes,
    thumbprint: str,
    *,
    password: str | None,
    provider: str | None = None,
    exportable: bool = False,
    overwrite: bool = False,
) -> Imported:
    params: dict[str, Any] = {
        "StorePath": store_path,
        "CertificateData": data,
        "ExpectedThumbprint": thumbprint,
    }
    if password is not None:
        params["Password"] = SecureString(password)
    if provider:
        params["ProviderName"] = provider
    if exportable:
        params["Exportable"] = True
    if overwrite:
        params["Overwrite"] = True
    invocation = session.invoke("Import-WinCertCertificate", params)
    record = invocation.record()
    found = str(record.get("Thumbprint", "")).upper()
    if found != thumbprint:
        raise JobStepError(
            ResultCode.IMPORT_VERIFICATION_FAILED,
            f"the host reported thumbprint {found or '(none)'} after importing {thumbprint}",
        )
    return Imported(found, str(record["Outcome"]), bool(record.get("HasPrivateKey")), invocation.warnings)


def import_certificate(
    session: RemoteSession,
    job: AddJob,
    prepared: PreparedCertificate,
    info: HostInfo,
    provider: str | None,
) -> Imported:
    """Import the job's certificate into its store path and confirm it on the host.

    Chain certificates are added only with ``include_chain`` (intermediates to ``CA``,
    self-signed roots to ``Root``); their outcomes become warnings.

    Raises:
        JobStepError: host-dependent checks; RemoteCommandError from the host.
    """
    parsed = for_host(prepared, job, info)
    check_provider(info, provider, parsed.key_algorithm if parsed.has_private_key else None)
    if parsed.has_private_key and parsed.pkcs12_bytes is not None:
        data, password = parsed.pkcs12_bytes, prepared.password
    else:
        data, password = parsed.leaf_der, None
    key = f"import {job.store.store_path} {parsed.thumbprint}"
    journal.begin("import", key, f"adding certificate {parsed.thumbprint} to {job.store.store_path}")
    imported = _import(
        session,
        job.store.store_path,
        data,
        parsed.thumbprint,
        password=password,
        provider=provider if parsed.has_private_key else None,
        exportable=job.exportable,
        overwrite=job.overwrite,
    )
    _journal_import(imported, job.store.store_path, key)
    if parsed.has_private_key and not imported.has_private_key:
        rolled_back = ""
        if imported.outcome == "added":
            remove_certificate(session, job.store.store_path, parsed.thumbprint, if_unused=False)
            rolled_back = "; the certificate this job imported was removed again"
        raise JobStepError(
            ResultCode.IMPORT_VERIFICATION_FAILED,
            f"certificate {parsed.thumbprint} is in {job.store.store_path} but without its private key"
            f"{rolled_back}",
        )
    warnings = list(imported.warnings)
    if job.include_chain:
        for der in parsed.chain_der:
            cert = x509.load_der_x509_certificate(der)
            store = "Root" if cert.issuer == cert.subject else "CA"
            chained = _import(session, store, der, thumbprint_of(der), password=None)
            warnings.append(
                f"chain certificate {chained.thumbprint} ({cert.subject.rfc4514_string()}):"
                f" {chained.outcome} in {store}"
            )
    return Imported(imported.thumbprint, imported.outcome, imported.has_private_key, warnings)


@dataclass(frozen=True)
class Removed:
    """``Remove-WinCertCertificate``'s answer: ``outcome`` removed / already_absent / in_use;
    ``warnings`` are the host's (e.g. "the private key could not be deleted"), for the result."""

    thumbprint: str
    outcome: str
    used_by: list[str]
    warnings: list[str] = field(default_factory=list)


def remove_certificate(
    session: RemoteSession, store_path: str, thumbprint: str, *, if_unused: bool
) -> Removed:
    """Delete ``thumbprint`` from ``store_path`` (with ``if_unused``: only when no IIS binding
    or SQL Server instance uses it)."""
    params: dict[str, Any] = {"StorePath": store_path, "Thumbprint": thumbprint}
    if if_unused:
        params["IfUnused"] = True
    key = f"remove {store_path} {thumbprint}"
    journal.begin("remove", key, f"removing certificate {thumbprint} from {store_path}")
    invocation = session.invoke("Remove-WinCertCertificate", params)
    record = invocation.record()
    removed = Removed(
        thumbprint,
        str(record["Outcome"]),
        [str(u) for u in record.get("UsedBy") or []],
        list(invocation.warnings),
    )
    if removed.outcome == "removed":
        journal.record("remove", f"removed certificate {thumbprint} from {store_path}", key)
    return removed


_JOURNAL_IMPORT = {
    "added": "added certificate {t} to {s}",
    "replaced": "replaced certificate {t} in {s}",
    "key_added": "added the private key of certificate {t} in {s}",
}


def _journal_import(imported: Imported, store_path: str, key: str) -> None:
    """Journal an import that changed the store (worker.journal); ``already_present`` did not."""
    if imported.outcome != "already_present":
        template = _JOURNAL_IMPORT.get(imported.outcome, "imported certificate {t} into {s}")
        journal.record("import", template.format(t=imported.thumbprint, s=store_path), key)


def roll_back_import(
    session: RemoteSession, store_path: str, thumbprint: str, cause: RemoteCommandError
) -> None:
    """Remove the certificate this job imported because the step after the import failed, and
    say what happened in ``cause``'s message: removed again, kept because something started
    using it meanwhile, or the removal failed too. Never hides ``cause``."""
    try:
        removed = remove_certificate(session, store_path, thumbprint, if_unused=True)
    except Exception as exc:
        cause.message += (
            f" — and removing the certificate {thumbprint} this job imported failed too"
            f" ({type(exc).__name__}); remove it from {store_path} by hand"
        )
        return
    if removed.outcome == "in_use":
        cause.message += (
            f" (the certificate {thumbprint} this job imported was kept in {store_path}: it is"
            f" used by {'; '.join(removed.used_by)})"
        )
    else:
        cause.message += f" (the certificate {thumbprint} this job imported was removed again)"
    for warning in removed.warnings:  # e.g. its private key could not be deleted
        cause.message += f"; {warning}"
