"""Options shared by the job commands (store, WinRM, output) and the entry-parameter options.

Each option is defined once, as an ``Annotated`` type (``HostOpt``, ...). Options that commands
take together are option groups (:class:`StoreOptions`, :class:`TransportOptions`,
:class:`OutputOptions`, ...): a command decorated with :func:`option_groups` names the group as
one parameter, ``--help`` lists the group's options in that place, and the command receives one
instance of the group.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from producer.cli.base import OutputFormat, UsageProblemError, parse_target
from producer.cli.render import _output_format
from producer.messages import (
    StoreType,
)


class OptionGroup:
    """Base of the option-group dataclasses: every field is a command-line option, annotated with
    its ``Annotated[..., typer.Option(...)]`` type and given its default (see :func:`option_groups`)."""


def option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` as typer sees it with each :class:`OptionGroup` parameter replaced by the
    group's options, in the parameter's place (the ``--help`` order); when run, the group's
    values are gathered into one instance of the group for ``command``.

    Raises:
        ValueError: two parameters (of the command or its groups) share a name.
    """
    hints = typing.get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type[OptionGroup], list[str]]] = {}
    for param in inspect.signature(command).parameters.values():
        kind = hints.get(param.name, param.annotation)
        if isinstance(kind, type) and issubclass(kind, OptionGroup):
            field_hints = typing.get_type_hints(kind, include_extras=True)
            fields = dataclasses.fields(kind)  # type: ignore[arg-type]
            params += [
                inspect.Parameter(f.name, param.kind, default=f.default, annotation=field_hints[f.name])
                for f in fields
            ]
            groups[param.name] = (kind, [f.name for f in fields])
        else:
            params.append(param.replace(annotation=kind))

    @functools.wraps(command)
    def run(**values: Any) -> None:
        for name, (kind, names) in groups.items():
            values[name] = kind(**{field: values.pop(field) for field in names})
        command(**values)

    signature = inspect.Signature(params, return_annotation=None)
    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return run


TargetArg = Annotated[
    str | None,
    typer.Argument(
        metavar="HOST[:PORT]", help="Windows host: name, IPv4, [IPv6], optionally :PORT (the WinRM port)."
    ),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Same as the HOST[:PORT] argument.")]
StorePathOpt = Annotated[
    str | None,
    typer.Option("--store-path", help="LocalMachine store: My, Root, WebHosting, ... (required)"),
]
# Keyfactor's legacy IIS store types (IISBin 1.x) are IISU here.
_LEGACY_IIS_STORE_TYPES = frozenset({"iisbin", "iiswbin", "iisbindings"})


def store_type_option(value: str) -> str:
    """``--store-type`` in any letter case (Keyfactor spells WinSql, IISU, WinCert), and
    Keyfactor's legacy IISBin / IISWBin / IISBindings, as the job's store type; any other value is
    passed on for the job model to refuse, naming the choices."""
    key = value.strip().lower()
    for store_type in StoreType:
        if key == store_type.value.lower():
            return store_type.value
    if key in _LEGACY_IIS_STORE_TYPES:
        typer.echo(f"note: --store-type {value.strip()} is Keyfactor's legacy name of IISU", err=True)
        return StoreType.IISU.value
    return value


StoreTypeOpt = Annotated[
    str,
    typer.Option(
        "--store-type",
        callback=store_type_option,
        help="WinCert (any store), IISU (store path My or WebHosting) or WinSQL (My); any letter case.",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "-q",
        "--quiet",
        help="Print only the job id (with --wait too; the exit code then tells the result's status).",
    ),
]
ProtocolOpt = Annotated[str, typer.Option("--protocol", help="Transport: http or https (WinRM), or ssh.")]
PortOpt = Annotated[
    int | None,
    typer.Option("--port", help="Port 1-65535; default 5985 (http) / 5986 (https) / 22 (ssh)."),
]
AuthOpt = Annotated[
    str,
    typer.Option(
        "--auth",
        help="negotiate, ntlm, kerberos, basic, credssp or certificate (WinRM);"
        " publickey (ssh, its default).",
    ),
]
CredentialOpt = Annotated[
    str | None, typer.Option("--credential", help="Named credential the worker resolves.")
]
UsernameOpt = Annotated[
    str | None, typer.Option("--username", help="Inline WinRM credential user (with --password-stdin).")
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the WinRM password (for --username) from stdin; encrypted with WINCERT_SECRET_KEYS"
        " before sending.",
    ),
]
NoCertValidationOpt = Annotated[
    bool, typer.Option("--no-cert-validation", help="Do not validate the HTTPS listener certificate.")
]
SpnWithPortOpt = Annotated[bool, typer.Option("--spn-with-port", help="Kerberos SPN HTTP/host:port.")]
JeaEndpointOpt = Annotated[
    str | None, typer.Option("--jea-endpoint", help="PSRP configuration (JEA endpoint) name.")
]
JobIdOpt = Annotated[
    str | None, typer.Option("--job-id", help="Job id (UUID, the idempotency key); default: new.")
]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the result and show it.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text (= --format json).")]
FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        case_sensitive=False,
        help="table (default), json (the JobResult JSON) or keyfactor (Keyfactor's JobResult and,"
        " for inventory, CurrentInventoryItem list). Without --wait, json and keyfactor print the"
        " job id as JSON.",
    ),
]
InstanceNameOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--instance-name",
        metavar="NAME[,NAME...]",
        help="WinSQL: SQL Server instance name; repeat it or give a comma list. Add default: MSSQLSERVER;"
        " remove default: every instance bound to the certificate.",
    ),
]
RestartServiceOpt = Annotated[
    bool,
    typer.Option("--restart-service", help="WinSQL: restart the SQL Server service after (un)binding."),
]
SiteNameOpt = Annotated[
    str | None, typer.Option("--site-name", help="IISU: the IIS site (default 'Default Web Site').")
]
IpAddressOpt = Annotated[
    str | None,
    typer.Option("--ip-address", help="IISU: binding IP: * (default), IPv4 or IPv6 (brackets optional)."),
]
PortBindingOpt = Annotated[
    int | None,
    typer.Option(
        "--port-binding",
        metavar="PORT",
        help="IISU: the HTTPS binding's port (default 443); not the WinRM --port.",
    ),
]
HostNameOpt = Annotated[
    str | None, typer.Option("--host-name", help="IISU: binding host name (SNI); empty by default.")
]
SniFlagOpt = Annotated[
    str | None,
    typer.Option(
        "--sni-flag",
        metavar="FLAGS",
        help="IISU: IIS sslFlags bitmask 0-127 (1 = SNI, needs --host-name).",
    ),
]
AllowTakeoverOpt = Annotated[
    bool,
    typer.Option("--allow-takeover", help="IISU: take over a binding another site owns."),
]
IncludeChainOpt = Annotated[
    bool,
    typer.Option("--include-chain", help="Also add intermediates to CA and self-signed roots to Root."),
]


@dataclass(frozen=True)
class StoreOptions(OptionGroup):
    """``--host``, ``--store-path``, ``--store-type``: which store (with the HOST argument)."""

    host: HostOpt = None
    store_path: StorePathOpt = None
    store_type: StoreTypeOpt = "WinCert"


@dataclass(frozen=True)
class TransportOptions(OptionGroup):
    """How to reach the host: protocol, port, authentication, credential, SPN, JEA endpoint."""

    protocol: ProtocolOpt = "https"
    port: PortOpt = None
    auth: AuthOpt = "negotiate"
    credential: CredentialOpt = None
    username: UsernameOpt = None
    password_stdin: PasswordStdinOpt = False
    no_cert_validation: NoCertValidationOpt = False
    spn_with_port: SpnWithPortOpt = False
    jea_endpoint: JeaEndpointOpt = None


@dataclass(frozen=True)
class IisBindingOptions(OptionGroup):
    """The IISU binding's entry parameters (add, reenroll, complete)."""

    site_name: SiteNameOpt = None
    ip_address: IpAddressOpt = None
    port_binding: PortBindingOpt = None
    host_name: HostNameOpt = None
    sni_flag: SniFlagOpt = None


@dataclass(frozen=True)
class SqlOptions(OptionGroup):
    """WinSQL: ``--instance-name`` (entry parameter) and ``--restart-service`` (store field)."""

    instance_name: InstanceNameOpt = None
    restart_service: RestartServiceOpt = False


@dataclass(frozen=True)
class OutputOptions(OptionGroup):
    """``--wait``, ``--timeout``, ``--json``, ``--format``, ``-q``: what a job command prints."""

    wait: WaitOpt = False
    timeout: TimeoutOpt = 60.0
    as_json: JsonOpt = False
    fmt: FormatOpt = None
    quiet: QuietOpt = False

    def format(self) -> OutputFormat:
        """``--format``, with ``--json`` as its alias; exits 2 when the two disagree."""
        return _output_format(self.as_json, self.fmt)


@dataclass(frozen=True)
class _Connection:
    """The store and WinRM options every job command takes."""

    target: str | None
    host: str | None
    store_path: str | None
    store_type: str
    protocol: str
    port: int | None
    auth: str
    credential: str | None
    username: str | None
    password_stdin: bool
    no_cert_validation: bool
    spn_with_port: bool
    jea_endpoint: str | None

    @classmethod
    def of(cls, target: str | None, store: StoreOptions, transport: TransportOptions) -> _Connection:
        """The connection from the HOST argument and the store and transport options."""
        return cls(
            target, store.host, store.store_path, store.store_type, transport.protocol, transport.port,
            transport.auth, transport.credential, transport.username, transport.password_stdin,
            transport.no_cert_validation, transport.spn_with_port, transport.jea_endpoint,
        )  # fmt: skip

    def check(self, command: str) -> tuple[str, int | None]:
        """The host and WinRM port; raises :class:`UsageProblemError` for missing or doubled options."""
        if self.target is not None and self.host is not None:
            raise UsageProblemError("store.client_machine: give the host once, as HOST[:PORT] or --host")
        given = self.target if self.target is not None else self.host
        if given is None:
            raise UsageProblemError(
                "store.client_machine (HOST or --host): missing; give the Windows host, e.g."
                f" `wincert {command} web01.contoso.com --store-path My ...`"
            )
        host_name, target_port = parse_target(given)
        if target_port is not None and self.port is not None and target_port != self.port:
            raise UsageProblemError(
                f"store.port: given twice ({target_port} in HOST:PORT, {self.port} in --port); give it once"
            )
        if self.store_path is None:
            raise UsageProblemError(
                "store.store_path (--store-path): missing; name a store such as My or WebHosting"
            )
        if self.credential is not None and (self.username is not None or self.password_stdin):
            raise UsageProblemError(
                "store.credential: give either --credential NAME or --username with --password-stdin"
            )
        if self.username is not None and not self.password_stdin:
            raise UsageProblemError(
                "store.credential (--username): also give --password-stdin and pipe the password in"
                " (there is no --password flag, so it never appears in the process list)"
            )
        if self.password_stdin and self.username is None:
            raise UsageProblemError("store.credential (--password-stdin): also give --username")
        return host_name, target_port if target_port is not None else self.port

    def store(self, host_name: str, port: int | None, *, restart_service: bool = False) -> dict[str, Any]:
        """The ``store`` fields; an inline credential is a placeholder (see :func:`_submit_command`)."""
        store: dict[str, Any] = {
            "store_type": self.store_type,
            "client_machine": host_name,
            "store_path": self.store_path,
            "protocol": self.protocol,
            "port": port,
            # protocol ssh: the default --auth means "the ssh default" (publickey)
            "auth": None if self.protocol == "ssh" and self.auth == "negotiate" else self.auth,
            "cert_validation": not self.no_cert_validation,
            "spn_with_port": self.spn_with_port,
            "jea_endpoint": self.jea_endpoint,
        }
        if restart_service:
            store["restart_service"] = True
        if self.credential is not None:
            store["credential"] = {"kind": "named", "name": self.credential}
        elif self.username is not None:
            store["credential"] = {"kind": "inline", "username": self.username, "password_plaintext": "-"}
        return store


def _instance_names(values: list[str] | None) -> list[str] | None:
    """``--instance-name`` values, each possibly a comma list, flattened (the model checks them)."""
    if not values:
        return None
    return [part for value in values for part in value.split(",")]


# Entry-parameter options: option -> (peer name, store types it applies to).
_ENTRY_OPTIONS: dict[str, tuple[str, tuple[StoreType, ...]]] = {
    "--site-name": ("SiteName", (StoreType.IISU,)),
    "--ip-address": ("IPAddress", (StoreType.IISU,)),
    "--port-binding": ("Port", (StoreType.IISU,)),
    "--host-name": ("HostName", (StoreType.IISU,)),
    "--sni-flag": ("SniFlag", (StoreType.IISU,)),
    "--instance-name": ("InstanceName", (StoreType.WIN_SQL,)),
    "--provider-name": ("ProviderName", (StoreType.WIN_CERT, StoreType.IISU, StoreType.WIN_SQL)),
}
# Job options that only mean something for some store types: option -> (field, store types).
_STORE_TYPE_OPTIONS: dict[str, tuple[str, tuple[StoreType, ...]]] = {
    "--restart-service": ("store.restart_service", (StoreType.WIN_SQL,)),
    "--allow-takeover": ("allow_takeover", (StoreType.IISU,)),
}


def _store_type_or_none(value: str) -> StoreType | None:
    try:
        return StoreType(value)
    except ValueError:
        return None  # the job model names the bad --store-type


def _check_applicable(store_type: str, given: dict[str, Any]) -> None:
    """Refuse options (``given``: option -> value or None) that do not apply to the store type."""
    kind = _store_type_or_none(store_type)
    if kind is None:
        return
    for option, value in given.items():
        if value is None or value is False:
            continue
        if option in _ENTRY_OPTIONS:
            name, kinds = _ENTRY_OPTIONS[option]
            field = f"entry_parameters.{name}"
        else:
            field, kinds = _STORE_TYPE_OPTIONS[option]
        if kind not in kinds:
            raise UsageProblemError(
                f"{field} ({option}): applies to {' and '.join(k.value for k in kinds)} stores only,"
                f" not {kind.value}; leave it out or change --store-type"
            )


def _entry_parameters(store_type: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """Entry parameters by peer name from the options given (None when none was)."""
    _check_applicable(store_type, options)
    entry = {_ENTRY_OPTIONS[o][0]: v for o, v in options.items() if v is not None}
    return entry or None


@dataclass(frozen=True)
class _Binding:
    """The entry-parameter options of add, reenroll and complete (IISU binding, WinSQL instances)."""

    iis: IisBindingOptions
    sql: SqlOptions
    allow_takeover: bool
    provider_name: str | None = None
    """``entry_parameters.ProviderName`` (add); reenroll's --provider-name is a job field."""

    def entry_parameters(self, store_type: str) -> dict[str, Any] | None:
        """Entry parameters by peer name for a ``store_type`` store; raises
        :class:`UsageProblemError` for an option the store type does not take."""
        entry = _entry_parameters(
            store_type,
            {
                "--site-name": self.iis.site_name,
                "--ip-address": self.iis.ip_address,
                "--port-binding": self.iis.port_binding,
                "--host-name": self.iis.host_name,
                "--sni-flag": self.iis.sni_flag,
                "--provider-name": self.provider_name,
                "--instance-name": _instance_names(self.sql.instance_name),
            },
        )
        _check_applicable(
            store_type,
            {"--restart-service": self.sql.restart_service, "--allow-takeover": self.allow_takeover},
        )
        return entry
