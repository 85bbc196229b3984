"""Simulator implementation of ``worker/powershell/Sql.ps1``.

``Get-WinCertSqlInstance``, ``Set-WinCertSqlCertificate`` and ``Clear-WinCertSqlCertificate`` on
the host's :class:`simulator.windows.sql.SqlServer` (registry value, service, key-file ACLs).
"""

from __future__ import annotations

from typing import Any

from simulator.commands.iis import THUMBPRINT_PATTERN, command_error, dumps, validate_pattern
from simulator.commands.inventory import validate_not_null_or_empty
from simulator.commands.registry import REGISTRY
from simulator.runtime import CommandContext
from simulator.windows.sql import SqlError, SqlServer


def _sql(ctx: CommandContext) -> SqlServer:
    return ctx.host.sql


@REGISTRY.register("Get-WinCertSqlInstance")
def get_wincert_sql_instance(ctx: CommandContext, params: dict[str, Any]) -> None:
    """One compact JSON object per installed instance (none when SQL Server is not installed).

    Keys: InstanceName, InstanceId, Certificate (upper hex or ""), ServiceName (``MSSQLSERVER``
    or ``MSSQL$<name>``), ServiceAccount (normalised: ``NT AUTHORITY\\SYSTEM`` for LocalSystem,
    ``<COMPUTERNAME>\\user`` for ``.\\user``), ServiceState (``Running``, ``Stopped``, ...),
    Version (``Setup\\PatchLevel``), ServiceSidType (0 none, 1 unrestricted, 3 restricted).
    """
    sql = _sql(ctx)
    with ctx.host.lock:
        rows = [{
            "InstanceName": i.name,
            "InstanceId": i.instance_id,
            "Certificate": i.thumbprint,
            "ServiceName": i.service_name,
            "ServiceAccount": sql.account_of(i),
            "ServiceState": i.service_state,
            "Version": i.version,
            "ServiceSidType": i.service_sid_type,
        } for i in sql.instances]
    for row in rows:
        ctx.write_output(dumps(row))


@REGISTRY.register(
    "Set-WinCertSqlCertificate",
    parameters=("InstanceName", "Thumbprint", "StorePath", "RestartService"),
    mandatory=("InstanceName", "Thumbprint", "StorePath"),
    switches=("RestartService",),
)
def set_wincert_sql_certificate(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Grant Read on the key to the service account, write the Certificate value, restart if asked.

    Output ``{"InstanceName", "Outcome": "bound"|"unchanged", "Restarted", "RestartError",
    "KeyAccess": [{"Account", "Sid", "Granted"}]}`` (``unchanged``: the value already named the
    certificate and every account could already read the key). Accounts: the start account (by
    SID) and, with service SID type 1 or 3, ``NT SERVICE\\<service>``. Verbose: the key file and
    each account, the registry value written.

    Raises:
        CommandError: ``WinCert.SqlInstanceNotFound``, ``WinCert.CertificateNotFound`` (store
            or certificate missing), ``WinCert.PrivateKeyNotFound``, ``WinCert.SqlEccNotSupported``
            and ``WinCert.KeyAclFailed`` (nothing changed); parameter validation errors.
    """
    command = "Set-WinCertSqlCertificate"
    name = validate_not_null_or_empty(command, "InstanceName", params.get("InstanceName"))
    thumbprint = validate_pattern(command, "Thumbprint", params.get("Thumbprint"), THUMBPRINT_PATTERN).upper()
    store_path = validate_not_null_or_empty(command, "StorePath", params.get("StorePath"))
    sql = _sql(ctx)
    with ctx.host.lock:
        store = ctx.host.get_store(store_path)
        entry = store.get(thumbprint) if store is not None else None
        try:
            result = sql.bind(
                instance_name=name, thumbprint=thumbprint, store_name=store_path,
                store_found=store is not None, present=entry is not None,
                private_key=entry.private_key if entry is not None else None,
                restart=bool(params.get("RestartService")),
            )
        except SqlError as exc:
            raise command_error(exc) from None
        instance = sql.find(name)
    for grant in result.key_access:
        if grant.granted:
            ctx.write_verbose(f"Granted Read on {result.key_file} to {grant.account} ({grant.sid}).")
        else:
            ctx.write_verbose(f"{grant.account} ({grant.sid}) can already read {result.key_file}.")
    if instance is not None:
        ctx.write_verbose(f"Certificate of SQL Server instance {instance.name} ({instance.instance_id}) is"
                          f" {instance.certificate}.")
    ctx.write_output(dumps({
        "InstanceName": result.instance_name,
        "Outcome": result.outcome,
        "Restarted": result.restarted,
        "RestartError": result.restart_error,
        "KeyAccess": [{"Account": g.account, "Sid": g.sid, "Granted": g.granted} for g in result.key_access],
    }))


@REGISTRY.register(
    "Clear-WinCertSqlCertificate",
    parameters=("InstanceName", "Thumbprint", "RestartService"),
    mandatory=("InstanceName", "Thumbprint"),
    switches=("RestartService",),
)
def clear_wincert_sql_certificate(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Empty the instance's Certificate value only if it is ``Thumbprint`` (restart only then).

    Output ``{"InstanceName", "Outcome": "unbound"|"not_bound", "CurrentThumbprint" (the value
    found, upper case, or null when empty), "Restarted", "RestartError"}``.

    Raises:
        CommandError: ``WinCert.SqlInstanceNotFound``; parameter validation errors.
    """
    command = "Clear-WinCertSqlCertificate"
    name = validate_not_null_or_empty(command, "InstanceName", params.get("InstanceName"))
    thumbprint = validate_pattern(command, "Thumbprint", params.get("Thumbprint"), THUMBPRINT_PATTERN).upper()
    try:
        result = _sql(ctx).clear(instance_name=name, thumbprint=thumbprint,
                                 restart=bool(params.get("RestartService")))
    except SqlError as exc:
        raise command_error(exc) from None
    ctx.write_output(dumps({
        "InstanceName": result.instance_name,
        "Outcome": result.outcome,
        "CurrentThumbprint": result.current_thumbprint,
        "Restarted": result.restarted,
        "RestartError": result.restart_error,
    }))
