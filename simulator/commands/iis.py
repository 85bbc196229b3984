"""Simulator implementation of ``worker/powershell/Iis.ps1``.

``Get-WinCertIisBinding``, ``Set-WinCertIisBinding`` and ``Remove-WinCertIisBinding`` on the
host's :class:`simulator.windows.iis.IisServer`. Parameter validation reproduces the
``param()`` attributes of the PowerShell (``ValidateNotNullOrEmpty``, ``ValidatePattern``,
``ValidateRange``) with Windows PowerShell 5.1's messages and error ids; the behaviour and
``WinCert.*`` errors are the model's.
"""

from __future__ import annotations

import json
import re
from typing import Any

from simulator.commands.inventory import validate_not_null_or_empty
from simulator.commands.registry import REGISTRY
from simulator.runtime import CommandContext, CommandError
from simulator.windows.iis import (
    CertificateCheck,
    IisError,
    IisServer,
    idn_forms,
    iis_not_installed,
    mapping_parts,
    split_binding_information,
)

# The ValidatePattern texts of the .ps1 param() blocks (.NET regex, case-insensitive; \z = end).
THUMBPRINT_PATTERN = r"^[0-9A-Fa-f]{40}\z"
IP_ADDRESS_PATTERN = (
    r"^(\*|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    r"|\[[0-9A-Fa-f:.]+\])\z"
)
HOST_NAME_PATTERN = r"^[^\s:/\x00-\x1F\x7F]*\z"


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON string, as ``ConvertTo-Json -Compress`` writes it."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def command_error(exc: IisError | Any) -> CommandError:
    """The terminating error for a model error (``IisError`` / ``SqlError``)."""
    return CommandError(exc.message, exc.error_id, exc.category, exc.target, exc.exception_type)


def _validation_error(command: str, message: str) -> CommandError:
    return CommandError(
        message,
        f"ParameterArgumentValidationError,{command}",
        "InvalidData",
        exception_type="System.Management.Automation.ParameterBindingValidationException",
    )


def validate_pattern(command: str, parameter: str, value: Any, pattern: str) -> str:
    """What ``[ValidatePattern(pattern)][string]`` does at parameter binding."""
    text = "" if value is None else str(value)
    python_pattern = pattern.removeprefix("^").removesuffix(r"\z")
    if re.fullmatch(python_pattern, text, re.IGNORECASE) is None:
        raise _validation_error(
            command,
            f"Cannot validate argument on parameter '{parameter}'. The argument \"{text}\" does not match"
            f" the \"{pattern}\" pattern. Supply an argument that matches \"{pattern}\" and try the command"
            " again.",
        )
    return text


def to_int(command: str, parameter: str, value: Any) -> int:
    """What an ``[int]`` parameter does with the argument (PowerShell conversion)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise CommandError(
            f"Cannot process argument transformation on parameter '{parameter}'. Cannot convert value"
            f" \"{value}\" to type \"System.Int32\". Error: \"Input string was not in a correct format.\"",
            f"ParameterArgumentTransformationError,{command}",
            "InvalidData",
            exception_type="System.Management.Automation.ParameterBindingArgumentTransformationException",
        ) from None


def validate_range(command: str, parameter: str, value: int, low: int, high: int) -> int:
    """What ``[ValidateRange(low, high)]`` does at parameter binding."""
    if value < low:
        raise _validation_error(
            command,
            f"Cannot validate argument on parameter '{parameter}'. The {value} argument is less than the"
            f" minimum allowed range of {low}. Supply an argument that is greater than or equal to {low}"
            " and then try the command again.",
        )
    if value > high:
        raise _validation_error(
            command,
            f"Cannot validate argument on parameter '{parameter}'. The {value} argument is greater than the"
            f" maximum allowed range of {high}. Supply an argument that is less than or equal to {high}"
            " and then try the command again.",
        )
    return value


def _iis(ctx: CommandContext) -> IisServer:
    iis = getattr(ctx.host, "iis", None)
    if iis is None:
        raise command_error(iis_not_installed())
    return iis  # type: ignore[no-any-return]


def _endpoint_parameters(command: str, params: dict[str, Any]) -> tuple[str, str, int, str]:
    site = validate_not_null_or_empty(command, "SiteName", params.get("SiteName"))
    ip = validate_pattern(command, "IPAddress", params.get("IPAddress"), IP_ADDRESS_PATTERN)
    port = validate_range(command, "Port", to_int(command, "Port", params.get("Port")), 1, 65535)
    host = validate_pattern(command, "HostName", params.get("HostName"), HOST_NAME_PATTERN)
    return site, ip, port, host


@REGISTRY.register("Get-WinCertIisBinding")
def get_wincert_iis_binding(ctx: CommandContext, params: dict[str, Any]) -> None:
    """One compact JSON object per binding of every site, in site and binding order.

    Keys: SiteName, SiteId, Protocol, BindingInformation, IPAddress (``*``, IPv4 or bracketed
    IPv6 as in the binding; "" if the binding information is not ``ip:port:host``), Port (int or
    null), HostName (as stored), HostNameAscii / HostNameUnicode (its A-label / U-label forms,
    :func:`idn_forms`; the stored text when not a valid IDN), SslFlags, CertificateHash (upper hex
    or "", from the http.sys mapping), CertificateStoreName ("" when none).

    Raises:
        CommandError: ``WinCert.IisNotInstalled``.
    """
    iis = _iis(ctx)
    with ctx.host.lock:
        rows = []
        for site in iis.sites:
            for binding in site.bindings:
                parts = split_binding_information(binding.binding_information)
                ip, port, host = parts if parts is not None else ("", None, "")
                forms = idn_forms(host) or (host.lower(), host)
                cert_hash, store = iis.certificate_of(binding)
                rows.append({
                    "SiteName": site.name,
                    "SiteId": site.id,
                    "Protocol": binding.protocol,
                    "BindingInformation": binding.binding_information,
                    "IPAddress": ip,
                    "Port": port,
                    "HostName": host,
                    "HostNameAscii": forms[0],
                    "HostNameUnicode": forms[1],
                    "SslFlags": binding.ssl_flags,
                    "CertificateHash": cert_hash,
                    "CertificateStoreName": store,
                })
    for row in rows:
        ctx.write_output(dumps(row))


@REGISTRY.register(
    "Set-WinCertIisBinding",
    parameters=("SiteName", "IPAddress", "Port", "HostName", "SslFlags", "Thumbprint", "StorePath",
                "AllowTakeover"),
    mandatory=("SiteName", "IPAddress", "Port", "HostName", "SslFlags", "Thumbprint", "StorePath"),
    switches=("AllowTakeover",),
)
def set_wincert_iis_binding(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Create or replace the https binding ``IPAddress:Port:HostName`` of ``SiteName``.

    Output ``{"Outcome": "created"|"replaced"|"unchanged", "BindingInformation",
    "PreviousThumbprint"}``; with ``-AllowTakeover`` each endpoint taken from another site is a
    warning ``Binding '<info>' takes over ... from site '<other>' ...``.

    Raises:
        CommandError: ``WinCert.IisNotInstalled``, ``WinCert.InvalidSslFlags``,
            ``WinCert.WildcardHostNotSupported``, ``WinCert.SiteNotFound``,
            ``WinCert.CertificateNotFound``, ``WinCert.BindingConflict`` (see
            :meth:`IisServer.set_binding`); parameter validation errors.
    """
    command = "Set-WinCertIisBinding"
    site, ip, port, host_name = _endpoint_parameters(command, params)
    ssl_flags = to_int(command, "SslFlags", params.get("SslFlags"))
    thumbprint = validate_pattern(command, "Thumbprint", params.get("Thumbprint"), THUMBPRINT_PATTERN).upper()
    store_path = validate_not_null_or_empty(command, "StorePath", params.get("StorePath"))
    iis = _iis(ctx)
    with ctx.host.lock:
        store = ctx.host.get_store(store_path)
        entry = store.get(thumbprint) if store is not None else None
        check = CertificateCheck(store is not None, entry is not None,
                                 entry is not None and entry.has_private_key)
        try:
            result = iis.set_binding(
                site_name=site, ip_address=ip, port=port, host_name=host_name, ssl_flags=ssl_flags,
                thumbprint=thumbprint, store_name=store_path, os_build=ctx.host.os_build, certificate=check,
                allow_takeover=bool(params.get("AllowTakeover")),
            )
        except IisError as exc:
            raise command_error(exc) from None
    for warning in result.takeovers:
        ctx.write_warning(warning)
    ctx.write_output(dumps({
        "Outcome": result.outcome,
        "BindingInformation": result.binding_information,
        "PreviousThumbprint": result.previous_thumbprint,
    }))


@REGISTRY.register("Get-WinCertHttpSysMapping")
def get_wincert_http_sys_mapping(ctx: CommandContext, params: dict[str, Any]) -> None:
    """One compact JSON object per http.sys SSL mapping, with or without an IIS binding.

    Keys: Kind (``ipport`` | ``hostnameport`` | ``ccs``), Endpoint (``0.0.0.0:443``,
    ``www.example.test:443``, or the port for ``ccs``), CertificateHash, CertificateStoreName,
    IisBindings (``"<site> <binding information>"`` of the https bindings using it; [] for an
    orphan). A host without IIS has no mappings here (the model keeps them with IIS).
    """
    iis = getattr(ctx.host, "iis", None)
    if iis is None:
        return
    with ctx.host.lock:
        users: dict[str, list[str]] = {}
        for site in iis.sites:
            for binding in site.bindings:
                if binding.endpoint is not None:
                    used = f"{site.name} {binding.binding_information}"
                    users.setdefault(binding.endpoint, []).append(used)
        rows = []
        for key, mapping in iis.ssl_mappings.items():
            kind, _, port = mapping_parts(key)
            rows.append({
                "Kind": kind,
                "Endpoint": str(port) if kind == "ccs" else key.partition("=")[2],
                "CertificateHash": mapping.certificate_hash,
                "CertificateStoreName": mapping.store_name,
                "IisBindings": users.get(key, []),
            })
    for row in rows:
        ctx.write_output(dumps(row))


@REGISTRY.register(
    "Remove-WinCertIisBinding",
    parameters=("SiteName", "IPAddress", "Port", "HostName"),
    mandatory=("SiteName", "IPAddress", "Port", "HostName"),
)
def remove_wincert_iis_binding(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Remove the https binding ``IPAddress:Port:HostName`` of ``SiteName``.

    Output ``{"Outcome": "removed"|"already_absent", "Thumbprint"}``; a missing site is
    ``already_absent`` with the warning ``IIS site '<name>' was not found; nothing to remove.``

    Raises:
        CommandError: ``WinCert.IisNotInstalled``; parameter validation errors.
    """
    command = "Remove-WinCertIisBinding"
    site, ip, port, host_name = _endpoint_parameters(command, params)
    iis = _iis(ctx)
    result = iis.remove_binding(site_name=site, ip_address=ip, port=port, host_name=host_name)
    if not result.site_found:
        ctx.write_warning(f"IIS site '{site}' was not found; nothing to remove.")
    ctx.write_output(dumps({"Outcome": result.outcome, "Thumbprint": result.thumbprint}))
