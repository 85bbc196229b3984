"""Check mode for IISU and WinSQL add/remove (job field ``check``): read the host, report what
the job would change, change nothing.

Only read functions run on the host: ``Get-WinCertHostInfo``, ``Get-WinCertInventory``,
``Get-WinCertIisBinding``, ``Get-WinCertHttpSysMapping``, ``Get-WinCertSqlInstance``. The
decisions ``Set-WinCertIisBinding`` / ``Set-WinCertSqlCertificate`` / ``Remove-WinCertCertificate
-IfUnused`` take on the host are made here from what those return, with the same refusals
(``binding_conflict``, ``ssl_mapping_shadowed``, ``invalid_ssl_flags``, ``site_not_found``,
``sql_instance_not_found``, ``sql_ecc_not_supported``) and the same wording of the conflict.
Without ``check`` the handlers here call :mod:`worker.jobs.iisu` / :mod:`worker.jobs.winsql`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from producer.codes import ResultCode
from producer.entry_parameters import IisParameters, SqlParameters
from producer.messages import AddJob, RemoveJob, Status
from worker.jobs import certificates, iisu, winsql
from worker.jobs.certificates import HostInfo, PreparedCertificate
from worker.jobs.outcome import JobStepError, Outcome
from worker.jobs.wincert import inventory_items
from worker.remote.session import RemoteSession

SNI = 1
"""IIS sslFlags bit 1: SNI, the binding's http.sys mapping is host:port."""

NOTHING = "nothing changed."


def _canonical_ip(ip: str) -> str:
    if ip == "*":
        return "0.0.0.0"
    inner = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        return ip.lower()
    return f"[{address.compressed}]" if address.version == 6 else str(address)


def endpoint_key(ip_address: str, port: int, host_ascii: str, ssl_flags: int) -> str:
    """The http.sys mapping an https binding uses (``Get-WinCertPrivateEndpointKey``):
    ``hostnameport=<A-label host>:<port>`` with SNI, else ``ipport=<ip>:<port>``."""
    if ssl_flags & SNI:
        return f"hostnameport={host_ascii.lower()}:{port}"
    return f"ipport={_canonical_ip(ip_address)}:{port}"


def describe_endpoint(key: str) -> str:
    """``ipport=0.0.0.0:443`` → ``IP:port 0.0.0.0:443`` (``Format-Endpoint`` of Iis.ps1)."""
    kind, _, value = key.partition("=")
    if kind == "ccs":
        return f"central certificate store port {value}"
    return f"{'IP:port' if kind == 'ipport' else 'host:port'} {value}"


def _parts(key: str) -> tuple[str, str, int]:
    kind, _, value = key.partition("=")
    if kind == "ccs":
        return kind, "", int(value)
    address, _, port = value.rpartition(":")
    return kind, address, int(port)


def _specific(kind: str, address: str) -> bool:
    return kind == "ipport" and address not in ("0.0.0.0", "[::]")


def shadowing(key: str, mappings: list[tuple[str, str]]) -> list[str]:
    """Texts for each http.sys mapping ``(key, thumbprint)`` the new mapping ``key`` would take
    precedence over, or that takes precedence over it (``Find-WinCertPrivateShadowedMapping``;
    http.sys order: IP-specific IP:port, SNI host:port, central store, wildcard IP:port)."""
    kind, address, port = _parts(key)
    texts = []
    for other, hash_ in mappings:
        other_kind, other_address, other_port = _parts(other)
        if other == key or other_port != port:
            continue
        served = f" (certificate {hash_})" if hash_ else ""
        client = key[7 : key.rfind(":")]
        if _specific(kind, address) and other_kind in ("hostnameport", "ccs"):
            texts.append(
                f"its {describe_endpoint(key)} would take precedence over the http.sys"
                f" {describe_endpoint(other)} mapping{served} for clients connecting to {client}"
            )
        elif kind == "hostnameport" and _specific(other_kind, other_address):
            texts.append(
                f"the http.sys {describe_endpoint(other)} mapping{served} takes precedence over its"
                f" {describe_endpoint(key)} for clients connecting to {other_address}"
            )
    return texts


def _binding_key(binding: dict[str, Any]) -> str:
    host = str(binding.get("HostNameAscii") or binding.get("HostName") or "").lower()
    return f"{str(binding.get('IPAddress', '')).lower()}:{binding.get('Port')}:{host}"


def _https(binding: dict[str, Any]) -> bool:
    return str(binding.get("Protocol", "")).lower() == "https"


def _hash(binding: dict[str, Any]) -> str:
    return str(binding.get("CertificateHash") or "").upper()


def _users(
    thumbprint: str, all_bindings: list[dict[str, Any]], sql: list[dict[str, Any]], skip: str | None = None
) -> list[str]:
    """Who uses ``thumbprint`` as ``Remove-WinCertCertificate -IfUnused`` words it; ``skip``: the
    ``site|binding key`` the job changes (it will no longer use it)."""
    used = [
        f"IIS site '{b['SiteName']}' binding {b['BindingInformation']}"
        for b in all_bindings
        if _https(b) and _hash(b) == thumbprint and f"{b['SiteName']}|{_binding_key(b)}" != skip
    ]
    used += [
        f"SQL Server instance {i['InstanceName']}"
        for i in sql
        if str(i.get("Certificate") or "").strip().upper() == thumbprint
    ]
    return used


def _sql_instances(session: RemoteSession) -> list[dict[str, Any]]:
    return list(winsql.instances(session).values())


def _import_plan(
    job: AddJob,
    session: RemoteSession,
    prepared: PreparedCertificate,
    info: HostInfo,
    provider: str | None,
    store: str,
) -> tuple[str, str | None, set[str]]:
    """``(thumbprint, what the import would do or None, thumbprints in the store)`` with the
    same host checks as an import (build, key storage provider)."""
    parsed = certificates.for_host(prepared, job, info)
    certificates.check_provider(info, provider, parsed.key_algorithm if parsed.has_private_key else None)
    items, _warnings = inventory_items(session, store)
    present = {item.thumbprint: item for item in items}
    found = present.get(parsed.thumbprint)
    if found is None:
        plan: str | None = f"would import certificate {parsed.thumbprint} into {store}"
    elif parsed.has_private_key and not found.has_private_key:
        plan = f"would add the private key of certificate {parsed.thumbprint} in {store}"
    elif job.overwrite:
        plan = f"would replace certificate {parsed.thumbprint} in {store} (overwrite)"
    else:
        plan = None
    return parsed.thumbprint, plan, set(present)


def _renewal_plan(
    renewal: str | None,
    thumbprint: str,
    store: str,
    in_store: set[str],
    users: list[str],
    steps: list[str],
    warnings: list[str],
) -> None:
    """The renewal cleanup: a step when the renewed certificate would be deleted, a warning (as
    the real run words it) when it would be kept because something still uses it."""
    if not renewal or renewal == thumbprint or renewal not in in_store:
        return
    if users:
        warnings.append(f"the renewed certificate {renewal} would be kept: still used by {'; '.join(users)}")
    else:
        steps.append(
            f"would delete the renewed certificate {renewal} from {store} (no binding or instance uses it)"
        )


def _outcome(thumbprint: str, steps: list[str], unchanged: str) -> Outcome:
    if not steps:
        return Outcome(
            Status.SUCCESS, ResultCode.ALREADY_PRESENT, f"Check: {unchanged}", thumbprint=thumbprint
        )
    return Outcome(
        Status.SUCCESS, ResultCode.OK, f"Check: {'; '.join(steps)}; {NOTHING}", thumbprint=thumbprint
    )


# --- IISU --------------------------------------------------------------------------------------


def iisu_add(job: AddJob, session: RemoteSession, prepared: PreparedCertificate) -> Outcome:
    """IISU add; with ``check``: report import, binding created / replaced (SSL flags, the
    thumbprint replaced), conflicts and shadowed mappings refused as the real run refuses them,
    renewal cleanup."""
    if not job.check:
        return iisu.add(job, session, prepared)
    entry = job.entry
    assert isinstance(entry, IisParameters)
    info = certificates.host_info(session)
    iisu.check_host(entry, info)
    store = job.store.store_path
    thumbprint, plan, in_store = _import_plan(job, session, prepared, info, entry.provider_name, store)
    all_bindings = iisu.bindings(session)
    information = entry.binding_information
    if not any(str(b.get("SiteName")) == entry.site_name for b in all_bindings):
        raise JobStepError(ResultCode.SITE_NOT_FOUND, f"IIS site '{entry.site_name}' was not found.")
    key = f"{entry.ip_address.lower()}:{entry.port}:{entry.host_name.lower()}"
    existing = next(
        (
            b
            for b in all_bindings
            if _https(b) and b["SiteName"] == entry.site_name and _binding_key(b) == key
        ),
        None,
    )
    where = f"{entry.site_name} https {information} (SSL flags {entry.sni_flag})"
    steps = [plan] if plan else []
    warnings: list[str] = []
    if existing is not None and (
        int(existing.get("SslFlags") or 0) == entry.sni_flag
        and _hash(existing) == thumbprint
        and str(existing.get("CertificateStoreName") or "") == store
    ):
        binding_step = None
    else:
        endpoint = endpoint_key(entry.ip_address, entry.port, entry.host_name, entry.sni_flag)
        conflicts = [
            b
            for b in all_bindings
            if _https(b)
            and b["SiteName"] != entry.site_name
            and (
                _binding_key(b) == key
                or (
                    b.get("Port") is not None
                    and endpoint_key(
                        str(b.get("IPAddress", "")),
                        int(b["Port"]),
                        str(b.get("HostNameAscii") or ""),
                        int(b.get("SslFlags") or 0),
                    )
                    == endpoint
                    and _hash(b) != thumbprint
                )
            )
        ]
        if conflicts and not job.allow_takeover:
            first = conflicts[0]
            served = f" (certificate {_hash(first)})" if _hash(first) else ""
            raise JobStepError(
                ResultCode.BINDING_CONFLICT,
                f"Binding '{information}' conflicts with site '{first['SiteName']}': its https binding"
                f" '{first['BindingInformation']}' uses the same {describe_endpoint(endpoint)}{served}."
                " Set allow_takeover on the job to take the binding over. Nothing was changed (check).",
            )
        mappings = [(f"{m.kind}={m.endpoint}", m.thumbprint) for m in iisu.http_sys_mappings(session)]
        shadows = shadowing(endpoint, mappings)
        if shadows and not job.allow_takeover:
            raise JobStepError(
                ResultCode.SSL_MAPPING_SHADOWED,
                f"Binding '{information}' would change which certificate some clients get:"
                f" {'; '.join(shadows)}. Set allow_takeover on the job to bind deliberately, or remove"
                " the other mapping (IISU inventory lists every http.sys mapping in ssl_mappings)."
                " Nothing was changed (check).",
            )
        warnings += [
            f"would take over the {describe_endpoint(endpoint)} from site '{c['SiteName']}'"
            f" (binding '{c['BindingInformation']}')"
            for c in conflicts
        ] + [f"binding '{information}': {text}" for text in shadows]
        if existing is None:
            binding_step = f"would create binding {where} with certificate {thumbprint}"
        else:
            old = _hash(existing) or "(none)"
            binding_step = (
                f"would replace binding {entry.site_name} https {existing['BindingInformation']}"
                f" (SSL flags {int(existing.get('SslFlags') or 0)} -> {entry.sni_flag}):"
                f" certificate {old} -> {thumbprint}"
            )
    if binding_step:
        steps.append(binding_step)
    _renewal_plan(
        job.renewal_thumbprint,
        thumbprint,
        store,
        in_store,
        _users(
            job.renewal_thumbprint or "",
            all_bindings,
            _sql_instances(session) if job.renewal_thumbprint else [],
            skip=f"{entry.site_name}|{key}",
        ),
        steps,
        warnings,
    )
    outcome = _outcome(
        thumbprint,
        steps,
        f"certificate {thumbprint} is already bound to {where}; the job would change nothing.",
    )
    return Outcome(outcome.status, outcome.code, outcome.message, warnings, thumbprint=thumbprint)


def iisu_remove(job: RemoveJob, session: RemoteSession) -> Outcome:
    """IISU remove; with ``check``: report the binding that would be removed (only while it
    uses the alias's certificate) and whether the certificate would be deleted."""
    if not job.check:
        return iisu.remove(job, session)
    alias = job.iis_alias
    store = job.store.store_path
    all_bindings = iisu.bindings(session)
    key = f"{alias.ip_address.lower()}:{alias.port}:{alias.host_name.lower()}"
    current = next(
        (
            b
            for b in all_bindings
            if _https(b)
            and str(b.get("SiteName", "")).lower() == alias.site_name.lower()
            and _binding_key(b) == key
        ),
        None,
    )
    steps: list[str] = []
    warnings: list[str] = []
    skip = None
    if current is not None and _hash(current) == alias.thumbprint:
        skip = f"{current['SiteName']}|{key}"
        steps.append(
            f"would remove binding {current['SiteName']} https {current['BindingInformation']}"
            f" (SSL flags {int(current.get('SslFlags') or 0)}, certificate {alias.thumbprint})"
        )
    elif current is not None:
        warnings.append(
            f"binding {alias.site_name} {alias.binding_information} would be left in place: it uses"
            f" certificate {_hash(current) or '(none)'}, not {alias.thumbprint}"
        )
    items, _ = inventory_items(session, store)
    if any(item.thumbprint == alias.thumbprint for item in items):
        users = _users(alias.thumbprint, all_bindings, _sql_instances(session), skip=skip)
        if users:
            warnings.append(f"certificate {alias.thumbprint} would be kept: still used by {'; '.join(users)}")
        else:
            steps.append(f"would delete certificate {alias.thumbprint} from {store}")
    if not steps:
        return Outcome(
            Status.SUCCESS,
            ResultCode.ALREADY_ABSENT,
            f"Check: binding {alias} is not present; the removal would change nothing.",
            warnings,
            thumbprint=alias.thumbprint,
        )
    return Outcome(
        Status.SUCCESS,
        ResultCode.OK,
        f"Check: {'; '.join(steps)}; {NOTHING}",
        warnings,
        thumbprint=alias.thumbprint,
    )


# --- WinSQL ------------------------------------------------------------------------------------


def _accounts(instance: dict[str, Any]) -> list[str]:
    """The accounts ``Set-WinCertSqlCertificate`` grants read on the key: the service's start
    account and, with ServiceSidType 1 or 3, its service SID ``NT SERVICE\\<service>``."""
    accounts = [str(instance.get("ServiceAccount") or "")]
    service_sid = f"NT SERVICE\\{instance.get('ServiceName')}"
    if int(instance.get("ServiceSidType") or 0) in (1, 3) and accounts[0].lower() != service_sid.lower():
        accounts.append(service_sid)  # one grant per SID: the start account may be the service SID
    return [a for a in accounts if a]


def winsql_add(job: AddJob, session: RemoteSession, prepared: PreparedCertificate) -> Outcome:
    """WinSQL add; with ``check``: report import, the instances that would be bound, key access
    and restarts, renewal cleanup; unknown instances and ECDSA on old SQL refused as for real."""
    if not job.check:
        return winsql.add(job, session, prepared)
    entry = job.entry
    assert isinstance(entry, SqlParameters)
    info = certificates.host_info(session)
    installed, names = winsql.resolve_instances(session, entry)
    winsql.check_ecc(installed, names, prepared.parsed.key_algorithm)
    store = winsql.SQL_STORE
    thumbprint, plan, in_store = _import_plan(job, session, prepared, info, entry.provider_name, store)
    warnings: list[str] = []
    targets = names
    if job.renewal_thumbprint:
        targets = [
            n for n in names if winsql._certificate(installed, n) in (job.renewal_thumbprint, thumbprint)
        ]
        warnings += [
            f"instance {n} would not be rebound: it does not use the renewed certificate"
            f" {job.renewal_thumbprint}"
            for n in names
            if n not in targets
        ]
    steps = [plan] if plan else []
    for name in targets:
        instance = installed[name.lower()]
        current = winsql._certificate(installed, name)
        running = str(instance.get("ServiceState") or "") == "Running"
        restart = job.store.restart_service and (plan is not None or current != thumbprint or not running)
        if current == thumbprint and not restart:
            continue
        action = (
            f"would bind instance {name} (now {current or 'no certificate'})"
            if current != thumbprint
            else f"instance {name} is bound already"
        )
        grant = f", grant read on the key to {', '.join(_accounts(instance)) or '(no service account)'}"
        steps.append(
            action + grant + (f" and restart service {instance.get('ServiceName')}" if restart else "")
        )
    if job.renewal_thumbprint and targets:
        rebound = {f"SQL Server instance {n}" for n in targets}
        users = [
            u
            for u in _users(
                job.renewal_thumbprint, _iis_bindings_if_any(session, info), list(installed.values())
            )
            if u not in rebound
        ]
        _renewal_plan(job.renewal_thumbprint, thumbprint, store, in_store, users, steps, warnings)
    outcome = _outcome(
        thumbprint,
        steps,
        f"certificate {thumbprint} is already bound to {', '.join(targets) or 'the instances'};"
        " the job would change nothing.",
    )
    return Outcome(outcome.status, outcome.code, outcome.message, warnings, thumbprint=thumbprint)


def _iis_bindings_if_any(session: RemoteSession, info: HostInfo) -> list[dict[str, Any]]:
    return iisu.bindings(session) if info.iis_version is not None else []


def winsql_remove(job: RemoveJob, session: RemoteSession) -> Outcome:
    """WinSQL remove; with ``check``: report the instances that would be unbound (and
    restarted) and whether the certificate would be deleted."""
    if not job.check:
        return winsql.remove(job, session)
    entry = job.entry_parameters
    installed = winsql.instances(session)
    requested = entry.instance_name if isinstance(entry, SqlParameters) and entry.instance_name else None
    names = (
        winsql._resolve(requested, installed)
        if requested
        else [str(i["InstanceName"]) for i in installed.values()]
    )
    thumbprint = job.thumbprint
    unbound = [n for n in names if winsql._certificate(installed, n) == thumbprint]
    steps = [
        f"would unbind instance {n}"
        + (
            f" and restart service {installed[n.lower()].get('ServiceName')}"
            if job.store.restart_service
            else ""
        )
        for n in unbound
    ]
    warnings: list[str] = []
    items, _ = inventory_items(session, winsql.SQL_STORE)
    if any(item.thumbprint == thumbprint for item in items):
        info = certificates.host_info(session)
        remaining = [i for i in installed.values() if str(i["InstanceName"]) not in unbound]
        users = _users(thumbprint, _iis_bindings_if_any(session, info), remaining)
        if users:
            warnings.append(f"certificate {thumbprint} would be kept: still used by {'; '.join(users)}")
        else:
            steps.append(f"would delete certificate {thumbprint} from {winsql.SQL_STORE}")
    if not steps:
        return Outcome(
            Status.SUCCESS,
            ResultCode.ALREADY_ABSENT,
            f"Check: no SQL Server instance is bound to {thumbprint}; the removal would change nothing.",
            warnings,
            thumbprint=thumbprint,
        )
    return Outcome(
        Status.SUCCESS,
        ResultCode.OK,
        f"Check: {'; '.join(steps)}; {NOTHING}",
        warnings,
        thumbprint=thumbprint,
    )
