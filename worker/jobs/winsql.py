"""WinSQL store jobs: the certificate SQL Server instances use for TLS.

* Inventory: one item per certificate some instance is bound to (alias = thumbprint,
  ``InstanceName`` = the instances, comma-joined, as the peer reports them).
* Add: an ECDSA certificate for an instance whose version cannot use one is refused
  (``sql_ecc_not_supported``, :func:`ecc_problem`) before anything is imported; import into
  ``My``; then per instance (``InstanceName``, default ``MSSQLSERVER``): grant read on the key to
  the service's start account and its service SID (``KeyAccess`` in the result), write the
  registry value, restart when the store's
  ``restart_service`` is set (``Set-WinCertSqlCertificate`` does the three in that order; an
  instance already bound to the certificate and running is not restarted, so re-runs are
  harmless). Unknown instance names fail before anything is imported. With a renewal thumbprint
  only instances bound to it are rebound (peer defect B10 fixed), then the old certificate is
  deleted when unused. A failed restart is a ``warning`` (``service_restart_failed``); a failed
  binding is a failure that names the instances already bound, and a certificate no instance
  took is removed again.
* Remove: unbind only instances bound to that thumbprint (peer defect B9 fixed), then delete the
  certificate unless another instance (or an IIS binding) still uses it; a failed restart is
  ``service_restart_failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from producer.codes import ResultCode
from producer.entry_parameters import SqlParameters
from producer.messages import AddJob, CertificateItem, InventoryJob, KeyAccess, RemoveJob, Status
from worker import journal
from worker.jobs import certificates
from worker.jobs.certificates import PreparedCertificate
from worker.jobs.outcome import JobStepError, Outcome
from worker.jobs.wincert import inventory_items, inventory_outcome
from worker.remote.errors import RemoteCommandError
from worker.remote.session import RemoteSession

SQL_STORE = "My"

ECC_MINIMUM_MAJOR_VERSION = 16
"""The first SQL Server major version that can use an ECDSA TLS certificate: SQL Server 2022.

Source: Microsoft's "Certificate requirements for SQL Server"
(learn.microsoft.com/sql/database-engine/configure-windows/certificate-requirements) requires a
legacy CSP key created with KeySpec AT_KEYEXCHANGE, which an ECDSA key (CNG only) never is, for
the versions it covers; the dbatools lab (dataplat/dbatools#10713) found 2019, 2022 and 2025
loading CNG *RSA* keys. No Microsoft page reachable to this project names a SQL Server 2019
cumulative update that adds ECDSA, so 2019 (15.x) and earlier are refused, and so is an instance
whose version cannot be read. ``Test-WinCertPrivateSqlEccSupport`` (Common.ps1) and the
simulator hold the same number (tests/contract)."""


def ecc_problem(version: str) -> str | None:
    """Why an instance of ``version`` (``Setup\\PatchLevel``, e.g. ``15.0.4430.1``) cannot use
    an ECDSA certificate, None when it can (:data:`ECC_MINIMUM_MAJOR_VERSION`)."""
    parts = version.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return "its version could not be read"
    if int(parts[0]) < ECC_MINIMUM_MAJOR_VERSION:
        return f"it is version {version.strip()}; ECDSA certificates need SQL Server 2022 (16.x) or later"
    return None


def check_ecc(installed: dict[str, dict[str, Any]], names: list[str], key_algorithm: str) -> None:
    """Refuse an ECDSA certificate (``key_algorithm`` "EC"/"ECDSA...") for any of ``names`` whose
    version cannot use it, before anything changes on the host.

    Raises:
        JobStepError: ``sql_ecc_not_supported``, naming each instance and its version.
    """
    if not key_algorithm.upper().startswith("EC"):
        return
    refused = [
        f"{name} ({problem})"
        for name in names
        if (problem := ecc_problem(str(installed[name.lower()].get("Version") or "")))
    ]
    if refused:
        raise JobStepError(
            ResultCode.SQL_ECC_NOT_SUPPORTED,
            f"the certificate has an ECDSA key, which SQL Server instance(s) {'; '.join(refused)} cannot"
            " use; bind an RSA certificate or upgrade the instance(s). Nothing was changed.",
        )


def instances(session: RemoteSession) -> dict[str, dict[str, Any]]:
    """Installed instances by lower-cased name (``Get-WinCertSqlInstance``)."""
    found = session.invoke("Get-WinCertSqlInstance", {}).records()
    return {str(i["InstanceName"]).lower(): i for i in found}


def _resolve(names: list[str], installed: dict[str, dict[str, Any]]) -> list[str]:
    unknown = [n for n in names if n.lower() not in installed]
    if unknown:
        listed = ", ".join(sorted(str(i["InstanceName"]) for i in installed.values())) or "none"
        raise JobStepError(
            ResultCode.SQL_INSTANCE_NOT_FOUND,
            f"InstanceName {', '.join(repr(n) for n in unknown)} is not installed; installed"
            f" instances: {listed}",
        )
    return [str(installed[n.lower()]["InstanceName"]) for n in names]


def inventory(job: InventoryJob, session: RemoteSession) -> Outcome:
    """One item per bound certificate, with the instances using it."""
    users: dict[str, list[str]] = {}
    for info in instances(session).values():
        thumbprint = str(info.get("Certificate") or "").upper()
        if thumbprint:
            users.setdefault(thumbprint, []).append(str(info["InstanceName"]))
    items: list[CertificateItem] = []
    warnings: list[str] = []
    if users:
        certs, warnings = inventory_items(session, SQL_STORE)
        by_thumbprint = {item.thumbprint: item for item in certs}
        for thumbprint, names in sorted(users.items()):
            cert = by_thumbprint.get(thumbprint)
            if cert is None:
                warnings.append(
                    f"Skipped instance(s) {', '.join(names)}: certificate {thumbprint} is not in"
                    f" LocalMachine\\{SQL_STORE}"
                )
                continue
            items.append(cert.model_copy(update={"parameters": {"InstanceName": ",".join(names)}}))
    return inventory_outcome(items, warnings)


def add(job: AddJob, session: RemoteSession, prepared: PreparedCertificate) -> Outcome:
    """Import the certificate and bind it to the instances.

    Every instance name is checked before anything is imported (``sql_instance_not_found``
    changes nothing). With a renewal thumbprint only instances bound to the old certificate (or,
    on a re-run, already to the new one) are bound. The old certificate is deleted once no
    instance (or IIS binding) uses it, also when a restart failed. A restart is asked for only
    where something changed or the service is not running, so an idempotent re-run does not
    restart SQL Server.
    """
    entry = job.entry
    assert isinstance(entry, SqlParameters)
    info = certificates.host_info(session)
    installed, names = resolve_instances(session, entry)
    check_ecc(installed, names, prepared.parsed.key_algorithm)
    imported = certificates.import_certificate(session, job, prepared, info, entry.provider_name)
    thumbprint = imported.thumbprint
    warnings = list(imported.warnings)
    targets = names
    if job.renewal_thumbprint:
        targets = [n for n in names if _certificate(installed, n) in (job.renewal_thumbprint, thumbprint)]
        warnings += [
            f"instance {n} was not rebound: it does not use the renewed certificate {job.renewal_thumbprint}"
            for n in names
            if n not in targets
        ]

    def roll_back(exc: RemoteCommandError) -> None:
        if imported.outcome == "added":
            certificates.roll_back_import(session, SQL_STORE, thumbprint, exc)

    result = bind(
        session,
        installed,
        targets,
        thumbprint,
        restart_service=job.store.restart_service,
        certificate_changed=imported.outcome != "already_present",
        on_first_failure=roll_back,
    )
    bound, restart_failed = result.bound, result.restart_failed
    warnings.extend(result.warnings)
    changed = imported.outcome != "already_present" or result.changed
    if job.renewal_thumbprint and job.renewal_thumbprint != thumbprint and bound:
        old = certificates.remove_certificate(session, SQL_STORE, job.renewal_thumbprint, if_unused=True)
        warnings.extend(old.warnings)
        if old.outcome == "in_use":
            warnings.append(
                f"the renewed certificate {old.thumbprint} was kept: still used by {'; '.join(old.used_by)}"
            )
        elif old.outcome == "removed":
            changed = True
            warnings.append(f"the renewed certificate {old.thumbprint} was removed (no instance uses it)")
    if restart_failed:
        return Outcome(
            Status.WARNING,
            ResultCode.SERVICE_RESTART_FAILED,
            f"Bound certificate {thumbprint} to {', '.join(bound)}, but restarting"
            f" {', '.join(restart_failed)} failed; restart the service for SQL Server to use the new"
            " certificate.",
            warnings,
            thumbprint=thumbprint,
            key_access=result.key_access,
        )
    if not changed:
        return Outcome(
            Status.SUCCESS,
            ResultCode.ALREADY_PRESENT,
            f"Certificate {thumbprint} is already bound to {', '.join(bound) or 'the instances'};"
            " nothing changed.",
            warnings,
            thumbprint=thumbprint,
            key_access=result.key_access,
        )
    where = ", ".join(bound) if bound else "no instance (none used the renewed certificate)"
    return Outcome(
        Status.SUCCESS,
        ResultCode.OK,
        f"Bound certificate {thumbprint} to {where}.",
        warnings,
        thumbprint=thumbprint,
        key_access=result.key_access,
    )



@dataclass(frozen=True)
class SqlBound:
    """What :func:`bind` did: instances bound, those whose restart failed, whether anything
    changed, warnings, and per instance the accounts with read access to the key."""

    bound: list[str]
    restart_failed: list[str]
    changed: bool
    warnings: list[str]
    key_access: list[KeyAccess]


def bind(
    session: RemoteSession,
    installed: dict[str, dict[str, Any]],
    targets: list[str],
    thumbprint: str,
    *,
    restart_service: bool,
    certificate_changed: bool,
    on_first_failure: Callable[[RemoteCommandError], None] | None = None,
) -> SqlBound:
    """Bind ``thumbprint`` (in ``My``) to each instance of ``targets`` with
    ``Set-WinCertSqlCertificate`` (key ACL, registry value, restart). Used by Add and by
    reenrollment.

    A restart is asked for (with ``restart_service``) only where something changed or the
    service is not running. A failed restart is recorded in ``restart_failed`` (and a warning),
    not raised.

    Raises:
        RemoteCommandError: binding an instance failed; the message names it and the instances
            already bound. ``on_first_failure`` runs first when no instance was bound yet (Add
            removes the certificate it imported).
    """
    bound: list[str] = []
    restart_failed: list[str] = []
    warnings: list[str] = []
    key_access: list[KeyAccess] = []
    changed = False
    for name in targets:
        params: dict[str, Any] = {"InstanceName": name, "Thumbprint": thumbprint, "StorePath": SQL_STORE}
        if restart_service and (
            certificate_changed
            or _certificate(installed, name) != thumbprint
            or str(installed[name.lower()].get("ServiceState") or "") != "Running"
        ):
            params["RestartService"] = True
        try:
            invocation = session.invoke("Set-WinCertSqlCertificate", params)
        except RemoteCommandError as exc:
            exc.message += f" — binding instance {name} failed"
            if bound:
                exc.message += (
                    f"; already bound to {thumbprint}: {', '.join(bound)} (run the job again once the"
                    f" cause is fixed, or remove {thumbprint} from them)"
                )
            elif on_first_failure is not None:
                on_first_failure(exc)
            raise
        record = invocation.record()
        warnings.extend(invocation.warnings)
        bound.append(name)
        key_access.extend(
            KeyAccess(
                instance_name=name,
                account=str(grant.get("Account") or ""),
                sid=str(grant.get("Sid") or ""),
                granted=bool(grant.get("Granted")),
            )
            for grant in record.get("KeyAccess") or []
        )
        if record["Outcome"] != "unchanged":
            journal.record("sql_bind", f"set SQL Server instance {name} to certificate {thumbprint}")
        changed = changed or record["Outcome"] != "unchanged"
        if record.get("RestartError"):
            restart_failed.append(name)
            warnings.append(f"instance {name}: {record['RestartError']}")
    return SqlBound(bound, restart_failed, changed, warnings, key_access)


def resolve_instances(
    session: RemoteSession, entry: SqlParameters
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The installed instances and the entry's instance names (default ``MSSQLSERVER``) as
    installed.

    Raises:
        JobStepError: ``sql_instance_not_found``.
    """
    installed = instances(session)
    return installed, _resolve(entry.instance_name or ["MSSQLSERVER"], installed)


def _certificate(installed: dict[str, dict[str, Any]], name: str) -> str:
    """The thumbprint instance ``name`` is bound to (upper hex, "" for none)."""
    return str(installed[name.lower()].get("Certificate") or "").strip().upper()


def remove(job: RemoveJob, session: RemoteSession) -> Outcome:
    """Unbind the instances bound to the thumbprint (of ``InstanceName``, default all), then
    delete the certificate when nothing uses it. A failed restart is ``service_restart_failed``."""
    entry = job.entry_parameters
    installed = instances(session)
    requested = entry.instance_name if isinstance(entry, SqlParameters) and entry.instance_name else None
    names = (
        _resolve(requested, installed) if requested else [str(i["InstanceName"]) for i in installed.values()]
    )
    thumbprint = job.thumbprint
    warnings: list[str] = []
    unbound: list[str] = []
    restart_failed: list[str] = []
    for name in names:
        if _certificate(installed, name) != thumbprint:
            continue  # unbind only instances bound to this certificate (peer defect B9)
        params: dict[str, Any] = {"InstanceName": name, "Thumbprint": thumbprint}
        if job.store.restart_service:
            params["RestartService"] = True
        invocation = session.invoke("Clear-WinCertSqlCertificate", params)
        record = invocation.record()
        warnings.extend(invocation.warnings)
        if record["Outcome"] == "unbound":
            unbound.append(name)
            journal.record("sql_unbind", f"cleared certificate {thumbprint} from SQL Server instance {name}")
            if record.get("RestartError"):
                restart_failed.append(name)
                warnings.append(f"instance {name}: {record['RestartError']}")
    cert = certificates.remove_certificate(session, SQL_STORE, thumbprint, if_unused=True)
    warnings.extend(cert.warnings)
    if cert.outcome == "in_use":
        warnings.append(f"certificate {thumbprint} was kept: still used by {'; '.join(cert.used_by)}")
    if not unbound and cert.outcome != "removed":
        state = "is not in" if cert.outcome == "already_absent" else "is kept in"
        return Outcome(
            Status.SUCCESS,
            ResultCode.ALREADY_ABSENT,
            f"No SQL Server instance is bound to {thumbprint} and it {state} {SQL_STORE}; nothing changed.",
            warnings,
            thumbprint=thumbprint,
        )
    parts = [f"unbound {', '.join(unbound)}"] if unbound else []
    if cert.outcome == "removed":
        parts.append(f"removed the certificate from {SQL_STORE}")
    if restart_failed:
        return Outcome(
            Status.WARNING,
            ResultCode.SERVICE_RESTART_FAILED,
            f"Certificate {thumbprint}: {'; '.join(parts)}; but restarting {', '.join(restart_failed)}"
            " failed; restart the service for SQL Server to stop using the certificate.",
            warnings,
            thumbprint=thumbprint,
        )
    return Outcome(
        Status.SUCCESS,
        ResultCode.OK,
        f"Certificate {thumbprint}: {'; '.join(parts)}.",
        warnings,
        thumbprint=thumbprint,
    )
