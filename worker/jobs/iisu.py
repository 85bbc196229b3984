"""IISU store jobs: certificates bound to IIS https bindings (peer store type "IIS Bound Certificate").

* Inventory: every http.sys SSL mapping of the host in ``ssl_mappings`` (IP:port, host:port,
  central store; orphans without an IIS binding included), and one item per https binding with a
  certificate whose certificate store is the job's
  store path (``My`` or ``WebHosting``; the peer reports every store under both, defect B16);
  alias ``<THUMBPRINT>:<SiteName>:<ip>:<port>:<host>`` and the peer's parameters (``HostName``
  as IIS stores it) plus ``HostNameAscii`` / ``HostNameUnicode``, its A-label and U-label forms.
  A binding whose certificate is missing from its store is a warning (``partial``), not a failed
  job.
* Add: host checks first (IIS installed, SSL flags for the OS build, wildcard host names on IIS
  10+), import, then ``Set-WinCertIisBinding`` for exactly ``ip:port:host`` on the site
  (``binding_conflict`` when another site owns the endpoint, unless ``allow_takeover``). A
  binding failure removes a certificate this job imported. A renewal then deletes the old
  certificate if no https binding (or SQL instance) still uses it.
* Remove: delete the one binding the alias names — only while it still uses the alias's
  certificate — then the certificate if nothing else uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producer.codes import ResultCode
from producer.entry_parameters import IisParameters, ssl_flags_problem
from producer.messages import AddJob, CertificateItem, InventoryJob, RemoveJob, SslMapping, Status
from worker import journal
from worker.jobs import certificates
from worker.jobs.certificates import HostInfo, PreparedCertificate
from worker.jobs.outcome import JobStepError, Outcome
from worker.jobs.wincert import inventory_items, inventory_outcome
from worker.remote.errors import RemoteCommandError
from worker.remote.session import RemoteSession

BINDING_CONFLICT_ID = "WinCert.BindingConflict"
"""Error id of ``Set-WinCertIisBinding`` when another site owns the endpoint."""
SSL_MAPPING_SHADOWED_ID = "WinCert.SslMappingShadowed"
"""Error id of ``Set-WinCertIisBinding`` when the new http.sys mapping shadows or is shadowed."""


def http_sys_mappings(session: RemoteSession) -> list[SslMapping]:
    """Every http.sys SSL mapping of the host (``Get-WinCertHttpSysMapping``), orphans included."""
    return [
        SslMapping(
            kind=r["Kind"],
            endpoint=str(r["Endpoint"]),
            thumbprint=str(r.get("CertificateHash") or "").upper(),
            store_name=str(r.get("CertificateStoreName") or ""),
            iis_bindings=[str(b) for b in r.get("IisBindings") or []],
            orphan=not r.get("IisBindings"),
        )
        for r in session.invoke("Get-WinCertHttpSysMapping", {}).records()
    ]


def bindings(session: RemoteSession) -> list[dict[str, Any]]:
    """Every binding of every site (``Get-WinCertIisBinding``), as dicts."""
    return session.invoke("Get-WinCertIisBinding", {}).records()


def _https_with_certificate(binding: dict[str, Any]) -> bool:
    return str(binding.get("Protocol", "")).lower() == "https" and bool(binding.get("CertificateHash"))


def inventory(job: InventoryJob, session: RemoteSession) -> Outcome:
    """One item per https binding with a certificate in the job's store path."""
    store_path = job.store.store_path
    all_bindings = bindings(session)
    mappings = http_sys_mappings(session)
    selected = [
        b
        for b in all_bindings
        if _https_with_certificate(b)
        and str(b.get("CertificateStoreName") or "My").lower() == store_path.lower()
    ]
    by_thumbprint: dict[str, CertificateItem] = {}
    warnings: list[str] = []
    if selected:
        certs, warnings = inventory_items(session, store_path)
        by_thumbprint = {item.thumbprint: item for item in certs}
    items: list[CertificateItem] = []
    for binding in selected:
        thumbprint = str(binding["CertificateHash"]).upper()
        info = str(binding["BindingInformation"])
        cert = by_thumbprint.get(thumbprint)
        if cert is None:
            warnings.append(
                f"Skipped binding {binding['SiteName']} {info}: certificate {thumbprint} is not in"
                f" LocalMachine\\{store_path}"
            )
            continue
        items.append(
            cert.model_copy(
                update={
                    "alias": f"{thumbprint}:{binding['SiteName']}:{info}",
                    "parameters": {
                        "SiteName": str(binding["SiteName"]),
                        "Port": str(binding["Port"]),
                        "IPAddress": str(binding["IPAddress"]),
                        "HostName": str(binding.get("HostName") or ""),
                        "HostNameAscii": str(binding.get("HostNameAscii") or ""),
                        "HostNameUnicode": str(binding.get("HostNameUnicode") or ""),
                        "SniFlag": str(int(binding.get("SslFlags") or 0)),
                        "Protocol": "https",
                    },
                }
            )
        )
    outcome = inventory_outcome(items, warnings)
    return Outcome(outcome.status, outcome.code, outcome.message, outcome.warnings, outcome.items,
                   ssl_mappings=mappings)


def _same_binding(binding: dict[str, Any], ip_address: str, port: int, host_name: str) -> bool:
    """Whether a ``Get-WinCertIisBinding`` row is ``ip:port:host`` in normalised form: IP
    case-insensitive, the host by its A-label form (``HostNameAscii``), so an alias naming
    ``xn--bcher-kva.example`` finds a binding IIS stores as ``bücher.example``."""
    stored_host = str(binding.get("HostNameAscii") or binding.get("HostName") or "").lower()
    return (
        str(binding.get("IPAddress", "")).lower() == ip_address.lower()
        and binding.get("Port") == port
        and stored_host == host_name.lower()
    )


def check_host(entry: IisParameters, info: HostInfo) -> None:
    """Fail unless the host can take the binding: IIS installed, SSL flags valid for the OS
    build, a wildcard host name only on IIS 10+.

    Raises:
        JobStepError: ``iis_not_installed``, ``invalid_ssl_flags``, ``wildcard_host_not_supported``.
    """
    if info.iis_version is None:
        raise JobStepError(
            ResultCode.IIS_NOT_INSTALLED,
            f"IIS is not installed on {info.computer_name or 'the host'}; use a WinCert store or install IIS",
        )
    problem = ssl_flags_problem(entry.sni_flag, info.os_build)
    if problem:
        raise JobStepError(ResultCode.INVALID_SSL_FLAGS, problem)
    major = int(info.iis_version.split(".", 1)[0] or 0)
    if entry.host_name.startswith("*.") and major < 10:
        raise JobStepError(
            ResultCode.WILDCARD_HOST_NOT_SUPPORTED,
            f"HostName {entry.host_name!r} is a wildcard, which needs IIS 10 or later (the host has IIS"
            f" {info.iis_version})",
        )


@dataclass(frozen=True)
class Bound:
    """``Set-WinCertIisBinding``'s answer: ``outcome`` created / replaced / unchanged."""

    outcome: str
    binding_information: str
    previous_thumbprint: str | None
    warnings: list[str]


def bind(
    session: RemoteSession, entry: IisParameters, store_path: str, thumbprint: str, *, allow_takeover: bool
) -> Bound:
    """Create or replace the site's https binding ``ip:port:host`` with ``thumbprint`` (in
    ``store_path``) and the entry's SSL flags. Used by Add and by reenrollment.

    Raises:
        RemoteCommandError: from the host (``WinCert.BindingConflict`` says to set
            ``allow_takeover``); nothing is rolled back here.
    """
    params: dict[str, Any] = {
        "SiteName": entry.site_name,
        "IPAddress": entry.ip_address,
        "Port": entry.port,
        "HostName": entry.host_name,
        "SslFlags": entry.sni_flag,
        "Thumbprint": thumbprint,
        "StorePath": store_path,
    }
    if allow_takeover:
        params["AllowTakeover"] = True
    key = f"bind {entry.site_name} {entry.binding_information} {thumbprint}"
    where = f"{entry.site_name} https {entry.binding_information}"
    journal.begin("bind", key, f"binding certificate {thumbprint} to {where}")
    try:
        invocation = session.invoke("Set-WinCertIisBinding", params)
    except RemoteCommandError as exc:
        if exc.error_id == BINDING_CONFLICT_ID:
            # the host names its own switch (-AllowTakeover); say what to set on the job
            exc.message += " Set allow_takeover on the job to take the binding over."
        elif exc.error_id == SSL_MAPPING_SHADOWED_ID:
            exc.message += (
                " Set allow_takeover on the job to bind deliberately, or remove the other mapping"
                " (IISU inventory lists every http.sys mapping in ssl_mappings)."
            )
        raise
    record = invocation.record()
    previous = record.get("PreviousThumbprint")
    bound = Bound(
        str(record["Outcome"]),
        str(record["BindingInformation"]),
        str(previous).upper() if previous else None,
        list(invocation.warnings),
    )
    if bound.outcome != "unchanged":
        journal.record("bind", f"bound certificate {thumbprint} to {where} ({bound.outcome})", key)
    return bound


def add(job: AddJob, session: RemoteSession, prepared: PreparedCertificate) -> Outcome:
    """Import the certificate and bind it to the site's https binding ``ip:port:host``."""
    entry = job.entry
    assert isinstance(entry, IisParameters)
    info = certificates.host_info(session)
    check_host(entry, info)
    imported = certificates.import_certificate(session, job, prepared, info, entry.provider_name)
    thumbprint = imported.thumbprint
    warnings = list(imported.warnings)
    try:
        bound = bind(session, entry, job.store.store_path, thumbprint, allow_takeover=job.allow_takeover)
    except RemoteCommandError as exc:
        if imported.outcome == "added":
            certificates.roll_back_import(session, job.store.store_path, thumbprint, exc)
        raise
    warnings.extend(bound.warnings)
    outcome = bound.outcome
    if job.renewal_thumbprint and job.renewal_thumbprint != thumbprint:
        old = certificates.remove_certificate(
            session, job.store.store_path, job.renewal_thumbprint, if_unused=True
        )
        warnings.extend(old.warnings)
        if old.outcome == "in_use":
            warnings.append(
                f"the renewed certificate {old.thumbprint} was kept: still used by {'; '.join(old.used_by)}"
            )
        elif old.outcome == "removed":
            warnings.append(f"the renewed certificate {old.thumbprint} was removed (no binding uses it)")
    unchanged = imported.outcome == "already_present" and outcome == "unchanged"
    message = (
        f"Certificate {thumbprint} is already bound to {entry.site_name} https {entry.binding_information};"
        " nothing changed."
        if unchanged
        else f"Bound certificate {thumbprint} to {entry.site_name} https {bound.binding_information}"
        f" ({outcome}; certificate {imported.outcome})."
    )
    code = ResultCode.ALREADY_PRESENT if unchanged else ResultCode.OK
    return Outcome(Status.SUCCESS, code, message, warnings, thumbprint=thumbprint)


def remove(job: RemoveJob, session: RemoteSession) -> Outcome:
    """Delete the binding the alias names, then the certificate when nothing uses it."""
    alias = job.iis_alias
    warnings: list[str] = []
    changed = False
    current = next(
        (
            b
            for b in bindings(session)
            if str(b.get("Protocol", "")).lower() == "https"
            and str(b.get("SiteName", "")).lower() == alias.site_name.lower()
            and _same_binding(b, alias.ip_address, alias.port, alias.host_name)
        ),
        None,
    )
    if current is not None and str(current.get("CertificateHash") or "").upper() == alias.thumbprint:
        params = {
            "SiteName": alias.site_name,
            "IPAddress": alias.ip_address,
            "Port": alias.port,
            "HostName": alias.host_name,
        }
        invocation = session.invoke("Remove-WinCertIisBinding", params)
        warnings.extend(invocation.warnings)
        changed = invocation.record()["Outcome"] == "removed"
        if changed:
            journal.record("unbind", f"removed binding {alias.site_name} https {alias.binding_information}")
    elif current is not None:
        warnings.append(
            f"binding {alias.site_name} {alias.binding_information} was left in place: it now uses"
            f" certificate {str(current.get('CertificateHash') or '(none)').upper()}, not {alias.thumbprint}"
        )
    cert = certificates.remove_certificate(session, job.store.store_path, alias.thumbprint, if_unused=True)
    warnings.extend(cert.warnings)
    if cert.outcome == "in_use":
        warnings.append(f"certificate {alias.thumbprint} was kept: still used by {'; '.join(cert.used_by)}")
    changed = changed or cert.outcome == "removed"
    if not changed:
        return Outcome(
            Status.SUCCESS,
            ResultCode.ALREADY_ABSENT,
            f"Binding {alias} is not present; nothing to remove.",
            warnings,
            thumbprint=alias.thumbprint,
        )
    return Outcome(
        Status.SUCCESS,
        ResultCode.OK,
        f"Removed {alias.site_name} https {alias.binding_information}"
        + (" and its certificate." if cert.outcome == "removed" else "."),
        warnings,
        thumbprint=alias.thumbprint,
    )
