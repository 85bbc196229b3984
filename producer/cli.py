"""The ``wincert`` command line: submit jobs, read and follow results, export the JSON Schema.

Settings come from ``WINCERT_*`` environment variables (:class:`producer.settings.ProducerSettings`).
Exit codes (also in ``wincert --help``): see :class:`ExitCode`.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import io
import json
import os
import re
import sys
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Any, NoReturn, Protocol

import click
import typer
from cryptography import x509
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from producer.client import (
    BackendUnavailableError,
    Client,
    PlaintextSecretRefusedError,
    ResultFormatError,
    ResultTimeoutError,
    TaskFailedError,
    endpoint,
    export_job_schema,
    redact_url,
)
from producer.keyfactor import KeyfactorConfigError, keyfactor_output, parse_keyfactor
from producer.messages import (
    AddJob,
    AnyJob,
    CertificateItem,
    InventoryJob,
    JobResult,
    ReenrollmentCompleteJob,
    ReenrollmentJob,
    RemoveJob,
    Status,
    StoreType,
    parse_job,
    parse_legacy_sans,
)
from producer.secrets import SecretKeyError, generate_key
from producer.settings import ENV_PREFIX, ProducerSettings


class ExitCode(IntEnum):
    """Process exit codes of ``wincert``."""

    OK = 0
    """Success (job submitted, or its result has status ``success``)."""
    ERROR = 1
    """Redis (broker / result backend) unreachable, or another runtime error."""
    USAGE = 2
    """Invalid command line, job or settings; nothing was enqueued."""
    WARNING = 3
    """The job's result has status ``warning``."""
    FAILURE = 4
    """The job's result has status ``failure``, or the task ended without a result."""
    NO_RESULT = 5
    """No result yet: ``--wait`` timed out, or ``wincert result`` found none."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C), e.g. ending ``wincert watch``."""


EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 Redis unreachable or other runtime error; 2 invalid command line,"
    " job or settings (nothing enqueued); 3 job warning; 4 job failure; 5 no result yet"
    " (timeout); 130 interrupted."
)

_STATUS_EXIT = {
    Status.SUCCESS: ExitCode.OK,
    Status.WARNING: ExitCode.WARNING,
    Status.FAILURE: ExitCode.FAILURE,
}
_STATUS_STYLE = {Status.SUCCESS: "bold green", Status.WARNING: "bold yellow", Status.FAILURE: "bold red"}

# Field path (tag removed) -> the command-line option that sets it.
_FIELD_OPTIONS = {
    "store.store_type": "--store-type",
    "store.client_machine": "HOST or --host",
    "store.store_path": "--store-path",
    "store.port": "--port or HOST:PORT",
    "store.protocol": "--protocol",
    "store.auth": "--auth",
    "store.credential.name": "--credential",
    "store.credential.username": "--username",
    "store.credential": "--credential or --username",
    "store.jea_endpoint": "--jea-endpoint",
    "store.restart_service": "--restart-service",
    "job_id": "--job-id",
    "alias": "--alias",
    "renewal_thumbprint": "--renewal-thumbprint",
    "certificate": "--certificate",
    "entry_parameters.SiteName": "--site-name",
    "entry_parameters.IPAddress": "--ip-address",
    "entry_parameters.Port": "--port-binding",
    "entry_parameters.HostName": "--host-name",
    "entry_parameters.SniFlag": "--sni-flag",
    "entry_parameters.ProviderName": "--provider-name",
    "entry_parameters.InstanceName": "--instance-name",
    "allow_takeover": "--allow-takeover",
    "include_chain": "--include-chain",
    "subject": "--subject",
    "key_algorithm": "--key-algorithm",
    "key_length": "--key-length",
    "provider_name": "--provider-name",
    "sans": "--san / --sans",
    "signer": "--signer",
    "signer.task": "--signer",
    "signer.queue": "--signer-queue",
    "chain": "--chain",
    "request_job_id": "--request-job-id",
}
# Names in messages of whole-object errors (no field in the loc) -> the option to change.
_MESSAGE_NAMES = {
    "SniFlag": "--sni-flag",
    "HostName": "--host-name",
    "restart_service": "--restart-service",
}
_TAGS = {"inventory", "add", "remove", "reenrollment", "reenrollment_complete", "named", "inline"}

app = typer.Typer(
    name="wincert",
    help="Submit WinCert Orchestrator jobs and read their results. Settings: WINCERT_* variables.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class OutputFormat(StrEnum):
    """How results are printed: ``table`` (text), ``json`` (the JobResult JSON) or ``keyfactor``
    (Keyfactor's JobResult, plus CurrentInventoryItem list for inventory)."""

    TABLE = "table"
    JSON = "json"
    KEYFACTOR = "keyfactor"


class UsageProblemError(Exception):
    """A command-line problem; the message names the field or option and the fix."""


# --- helpers ---------------------------------------------------------------------------------


def _fail(message: str, code: ExitCode) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [
        str(part)
        for i, part in enumerate(loc)
        if not (str(part) in _TAGS and (i == 0 or loc[i - 1] == "credential"))
    ]
    return ".".join(parts)


def _before_index(field: str) -> str:
    """``field`` up to its first list index: ``sans.0.type`` -> ``sans``."""
    parts = field.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i])
    return field


def validation_lines(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: ``field (option): what is wrong and how to fix it``.

    The job-type and credential-kind tags are dropped from the path; secrets are never echoed.
    """
    lines = []
    for error in exc.errors():
        field = _field_path(error["loc"])
        field = f"{prefix}.{field}" if prefix and field else (prefix or field)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not field and ": " in message and message.split(": ", 1)[0] in _FIELD_OPTIONS:
            field, message = message.split(": ", 1)
        elif not field and message.split(" ", 1)[0] in _FIELD_OPTIONS:
            field = message.split(" ", 1)[0]  # "key_length applies to RSA only; ..."
        message = message.removeprefix(f"{field.rsplit('.', 1)[-1]}: ") if field else message
        shown_input = error.get("input")
        if (
            error["type"] not in {"value_error", "missing", "extra_forbidden"}
            and "credential" not in field
            and isinstance(shown_input, str | int)
            and not isinstance(shown_input, bool)
        ):
            message = f"{message} (got {shown_input!r})"
        option = _FIELD_OPTIONS.get(field) or _FIELD_OPTIONS.get(_before_index(field))
        if option is None and field in {"", "store", "entry_parameters"}:
            named = [flag for name, flag in _MESSAGE_NAMES.items() if name in message]
            option = " / ".join(named) or None
        label = f"{field} ({option})" if option else (field or "job")
        lines.append(f"{label}: {message}")
    return lines


def _fail_validation(exc: ValidationError, prefix: str = "") -> NoReturn:
    for line in validation_lines(exc, prefix):
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(int(ExitCode.USAGE))


def _load_settings() -> ProducerSettings:
    try:
        return ProducerSettings()
    except ValidationError as exc:
        for error in exc.errors():
            name = ENV_PREFIX + "_".join(str(p) for p in error["loc"]).upper()
            typer.echo(f"error: {name}: {error['msg']}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None


def parse_target(target: str) -> tuple[str, int | None]:
    """Split ``HOST``, ``HOST:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` or a bare IPv6 literal.

    The host is returned unchecked (the job model validates it); a port that is not a number
    raises :class:`UsageProblemError`; range checks are the job model's.
    """
    text = target.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end != -1 and text[end + 1 :].startswith(":"):
            host, port_text = text[: end + 1], text[end + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if port_text is None:
        return host, None
    if not port_text.isdigit():
        raise UsageProblemError(
            f"store.port (HOST:PORT): {port_text!r} in {target!r} is not a port number; give 1-65535,"
            " e.g. web01:5986, or leave the port out"
        )
    return host, int(port_text)


def _read_password(prompt: str = "Password: ") -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return _strip_line_end(sys.stdin.read())


def _strip_line_end(text: str) -> str:
    """``text`` without one trailing newline (``\\n`` or ``\\r\\n``)."""
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _utc(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


def render_result(console: Console, result: JobResult) -> None:
    """Print the status line, the details line, the thumbprint added or removed (add, remove),
    warnings and (for inventory) the certificate table."""
    line = Text()
    line.append(result.status.value.upper(), style=_STATUS_STYLE[result.status])
    line.append(f" {result.code.value}: ")
    line.append(result.message)
    console.print(line)
    details = [f"job {result.job_id}"]
    if result.client_machine:
        store_type = result.store_type.value if result.store_type else ""
        details.append(f"{store_type} {result.store_path!r} on {result.client_machine}".strip())
    if result.items is not None:
        details.append(f"{len(result.items)} certificate{'s' if len(result.items) != 1 else ''}")
    if result.duration_seconds is not None:
        details.append(f"{result.duration_seconds:.2f} s")
    console.print(Text(" | ".join(details), style="dim"))
    if result.thumbprint:
        console.print(Text(f"thumbprint {result.thumbprint}"))
    for warning in result.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    if not result.items:
        return
    _render_items(console, result.items)


_THUMBPRINT_WIDTH = 40
_DATE_WIDTH = 10
_KEY_WIDTH = 3
_MIN_SUBJECT_WIDTH = 16


def _render_items(console: Console, items: Sequence[CertificateItem]) -> None:
    """Certificates as a table; as stacked blocks when the terminal is too narrow for one.

    Column widths are fixed by us, not measured by rich: rich clamps measured widths to
    ``min_width`` after shrinking a table, which renders it wider than the terminal and crops
    the lines. With fixed widths the thumbprint column is always exactly 40 characters.
    """
    gaps = 3 * 2  # padding between the four columns, none at the edges
    subject_width = console.width - (_THUMBPRINT_WIDTH + _DATE_WIDTH + _KEY_WIDTH + gaps)
    if subject_width < _MIN_SUBJECT_WIDTH:
        for item in items:
            # Text wraps at the terminal width and folds (never crops) a thumbprint that does
            # not fit on one line.
            console.print(Text(item.thumbprint, style="bold", overflow="fold"))
            console.print(
                Text(
                    f"  not after {_utc(item.not_after)} UTC | key {'yes' if item.has_private_key else 'no'}",
                    overflow="fold",
                )
            )
            console.print(Text(f"  {item.subject}", overflow="fold"))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("Thumbprint", width=_THUMBPRINT_WIDTH, no_wrap=True)
    table.add_column("Not after", width=_DATE_WIDTH, no_wrap=True)
    table.add_column("Key", width=_KEY_WIDTH, no_wrap=True)
    table.add_column("Subject", width=subject_width, overflow="fold")
    for item in items:
        table.add_row(
            Text(item.thumbprint),
            Text(item.not_after.strftime("%Y-%m-%d")),
            Text("yes" if item.has_private_key else "no"),
            Text(item.subject),
        )
    console.print(table)


def _exit_for(result: JobResult) -> NoReturn:
    raise typer.Exit(int(_STATUS_EXIT[result.status]))


def _print_result(result: JobResult, fmt: OutputFormat, job_history_id: int | None = None) -> None:
    if fmt is OutputFormat.JSON:
        sys.stdout.write(result.model_dump_json() + "\n")
    elif fmt is OutputFormat.KEYFACTOR:
        _print_json(keyfactor_output(result, job_history_id))
    else:
        render_result(_console(), result)


def _show_result(result: JobResult, fmt: OutputFormat, job_history_id: int | None = None) -> NoReturn:
    _print_result(result, fmt, job_history_id)
    _exit_for(result)


def _output_format(as_json: bool, fmt: OutputFormat | None) -> OutputFormat:
    """``--format``, with ``--json`` as an alias of ``--format json``."""
    if as_json and fmt not in (None, OutputFormat.JSON):
        _fail(f"--json is --format json; give one of --json or --format {fmt.value}", ExitCode.USAGE)
    if as_json:
        return OutputFormat.JSON
    return fmt if fmt is not None else OutputFormat.TABLE


def _run(action: Callable[[], None], settings: ProducerSettings) -> None:
    """Run ``action``, mapping connection and result errors to messages and exit codes."""
    try:
        action()
    except BackendUnavailableError as exc:
        _fail(str(exc), ExitCode.ERROR)
    except (OperationalError, RedisConnectionError, RedisTimeoutError) as exc:
        _fail(
            f"cannot reach Redis at {redact_url(settings.broker_url)} ({ENV_PREFIX}BROKER_URL /"
            f" {ENV_PREFIX}RESULT_BACKEND): {exc}",
            ExitCode.ERROR,
        )
    except ResultTimeoutError as exc:
        _fail(str(exc), ExitCode.NO_RESULT)
    except TaskFailedError as exc:
        _fail(str(exc), ExitCode.FAILURE)
    except ResultFormatError as exc:
        _fail(str(exc), ExitCode.ERROR)
    except KeyboardInterrupt:
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _check_timeout(timeout: float) -> None:
    if timeout <= 0:
        _fail(f"--timeout: {timeout:g} is not a positive number of seconds", ExitCode.USAGE)


# --- options shared by the job commands -------------------------------------------------------
# Defined once and used by inventory, add, remove, reenroll and complete; _Connection and
# _Output gather them.

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
StoreTypeOpt = Annotated[
    str,
    typer.Option(
        "--store-type", help="WinCert (any store), IISU (store path My or WebHosting) or WinSQL (My)."
    ),
]
ProtocolOpt = Annotated[str, typer.Option("--protocol", help="WinRM transport: http or https.")]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="WinRM port 1-65535; default 5985 (http) / 5986 (https).")
]
AuthOpt = Annotated[
    str, typer.Option("--auth", help="negotiate, ntlm, kerberos, basic, credssp or certificate.")
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
            "auth": self.auth,
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


class _Extras(Protocol):
    """What a command adds to the standard report of :func:`_send` (reenroll: CSR, completion job)."""

    def submitted(self, job: AnyJob) -> tuple[dict[str, str], list[str]]:
        """Extra JSON fields and extra text lines for the job-id report (without ``--wait``)."""
        ...

    def finished(self, result: JobResult, fmt: OutputFormat) -> None:
        """Called after the result was printed, before the exit code is chosen."""
        ...


@dataclass(frozen=True)
class _Output:
    wait: bool
    timeout: float
    fmt: OutputFormat
    job_history_id: int | None = None
    extras: _Extras | None = None


@dataclass(frozen=True)
class _Sealed:
    """Job fields holding secrets other than the WinRM password (the Add job's certificate).

    ``placeholder`` stands in for them while the rest of the job is validated, before anything
    is read from stdin; ``seal`` reads and encrypts the real values.
    """

    placeholder: dict[str, Any]
    seal: Callable[[Client], dict[str, Any]]
    field: str
    option: str


_NO_KEYS = (
    f"{ENV_PREFIX}SECRET_KEYS is not set (make a key with `wincert keygen` and give the workers the"
    f" same keys), and {ENV_PREFIX}ALLOW_PLAINTEXT_SECRETS is off (development only)"
)


def _describe(job: AnyJob) -> str:
    s = job.store
    where = f"{s.store_type.value} {s.store_path!r} on {endpoint(s)}"
    if isinstance(job, AddJob):
        return f"add to {where}"
    if isinstance(job, RemoveJob):
        return f"remove of {job.alias} from {where}"
    if isinstance(job, ReenrollmentJob):
        return f"reenrollment ({job.subject}) for {where}"
    if isinstance(job, ReenrollmentCompleteJob):
        request = f" of request {job.request_job_id}" if job.request_job_id else ""
        return f"reenrollment completion{request} for {where}"
    if isinstance(job, InventoryJob):
        return f"inventory of {where}"
    return f"{job.job_type} for {where}"


def _submit_command(
    settings: ProducerSettings,
    conn: _Connection,
    address: tuple[str, int | None],
    fields: dict[str, Any],
    out: _Output,
    *,
    restart_service: bool = False,
    sealed: _Sealed | None = None,
) -> None:
    """Validate, seal, submit and report one job (the body of inventory, add and remove).

    The job is validated with placeholders for its secrets first, so a bad option is reported
    before any password is read; then the secrets are read and encrypted and the real job is
    validated again (:meth:`Client.prepare`) and sent.
    """
    store = conn.store(*address, restart_service=restart_service)
    try:
        parse_job({**fields, "store": store, **(sealed.placeholder if sealed else {})})
    except ValidationError as exc:
        _fail_validation(exc)
    if not settings.has_secret_keys and not settings.allow_plaintext_secrets:
        if conn.username is not None:
            _fail(
                f"store.credential (--password-stdin): cannot send an inline password: {_NO_KEYS}; or use"
                " --credential NAME",
                ExitCode.USAGE,
            )
        if sealed is not None:
            _fail(f"{sealed.field} ({sealed.option}): cannot send it: {_NO_KEYS}", ExitCode.USAGE)

    client = Client(settings)
    try:
        if conn.username is not None:
            password = _read_password()
            if not password:
                _fail(
                    "store.credential (--password-stdin): the password read from stdin is empty",
                    ExitCode.USAGE,
                )
            try:
                store["credential"] = client.inline_credential(conn.username, password)
            except ValidationError as exc:
                _fail_validation(exc, prefix="store.credential")
            except (PlaintextSecretRefusedError, SecretKeyError) as exc:
                _fail(f"store.credential: {exc}", ExitCode.USAGE)
        job: dict[str, Any] = {**fields, "store": store}
        if sealed is not None:
            try:
                job.update(sealed.seal(client))
            except (PlaintextSecretRefusedError, SecretKeyError, ValueError) as exc:
                _fail(f"{sealed.field} ({sealed.option}): {exc}", ExitCode.USAGE)
        try:
            prepared = client.prepare(job)
        except ValidationError as exc:
            _fail_validation(exc)
        except PlaintextSecretRefusedError as exc:
            _fail(str(exc), ExitCode.USAGE)
        _send(client, settings, prepared, out)
    finally:
        client.close()


def _send(client: Client, settings: ProducerSettings, prepared: AnyJob, out: _Output) -> None:
    """Submit a prepared job and report it (job id, or the result with ``--wait``)."""

    def submit_and_show() -> None:
        submitted = client.submit(prepared)
        if not out.wait:
            fields, lines = out.extras.submitted(prepared) if out.extras else ({}, [])
            if out.fmt is not OutputFormat.TABLE:
                submitted_at = prepared.submitted_at
                _print_json(
                    {
                        "job_id": str(submitted),
                        "queue": settings.queue,
                        "submitted_at": submitted_at.isoformat() if submitted_at else None,
                        **fields,
                    }
                )
            else:
                typer.echo(f"submitted job {submitted} ({_describe(prepared)}) to queue {settings.queue}")
                typer.echo(f"result: wincert result {submitted} --wait")
                for line in lines:
                    typer.echo(line)
            return
        found = client.wait(submitted, out.timeout)
        _print_result(found, out.fmt, out.job_history_id)
        if out.extras is not None:
            out.extras.finished(found, out.fmt)
        _exit_for(found)

    _run(submit_and_show, settings)


def _job_fields(job_type: str, job_id: str | None, **fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"job_type": job_type, **fields}
    if job_id is not None:
        job["job_id"] = job_id
    return job


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


def _read_secret_file(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblemError(f"certificate.password ({option}): cannot read {path!r}: {exc}") from None
    return _strip_line_end(text)


@dataclass(frozen=True)
class _Binding:
    """The entry-parameter options of add, reenroll and complete (IISU binding, WinSQL instances)."""

    store_type: str
    site_name: str | None
    ip_address: str | None
    port_binding: int | None
    host_name: str | None
    sni_flag: str | None
    instance_name: list[str] | None
    restart_service: bool
    allow_takeover: bool
    provider_name: str | None = None
    """``entry_parameters.ProviderName`` (add); reenroll's --provider-name is a job field."""

    def entry_parameters(self) -> dict[str, Any] | None:
        """Entry parameters by peer name; raises :class:`UsageProblemError` for an option the
        store type does not take."""
        entry = _entry_parameters(
            self.store_type,
            {
                "--site-name": self.site_name,
                "--ip-address": self.ip_address,
                "--port-binding": self.port_binding,
                "--host-name": self.host_name,
                "--sni-flag": self.sni_flag,
                "--provider-name": self.provider_name,
                "--instance-name": _instance_names(self.instance_name),
            },
        )
        _check_applicable(
            self.store_type,
            {"--restart-service": self.restart_service, "--allow-takeover": self.allow_takeover},
        )
        return entry


def _read_certificate_file(path: str, field: str = "certificate", option: str = "--certificate") -> bytes:
    try:
        with open(path, "rb") as handle:
            contents = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageProblemError(f"{field} ({option}): cannot read {path!r}: {reason}") from None
    if not contents.strip(b"\x00 \t\r\n"):
        raise UsageProblemError(f"{field} ({option}): {path!r} is empty")
    return contents


def _signed_certificate_text(path: str, field: str, option: str) -> str:
    """A reenrollment_complete certificate field from a file: PEM text as it is (one or more
    certificates), base64 DER as it is, binary DER as base64.

    The file is parsed here, so a file that is not an X.509 certificate (PKCS#12, PKCS#7, a CSR)
    fails before anything is sent; a PEM file holding a private key is refused (the key of a
    reenrolled certificate stays on the host, and this field travels unencrypted).
    """
    contents = _read_certificate_file(path, field, option)
    expected = "; give the issued X.509 certificate as PEM or DER (.cer, .crt, .pem)"
    if b"-----BEGIN" in contents:
        try:
            text = contents.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UsageProblemError(f"{field} ({option}): {path!r} is not PEM text{expected}") from None
        if "PRIVATE KEY-----" in text:
            raise UsageProblemError(
                f"{field} ({option}): {path!r} contains a private key; give the certificate alone"
                " (the pending key is already on the host)"
            )
        try:
            x509.load_pem_x509_certificates(text.encode("utf-8"))
        except ValueError:
            raise UsageProblemError(
                f"{field} ({option}): {path!r} has no PEM CERTIFICATE block{expected}"
            ) from None
        return text
    der = contents
    text_form: str | None = None
    try:
        ascii_text = contents.decode("ascii")
        der = base64.b64decode("".join(ascii_text.split()), validate=True)
        text_form = ascii_text.strip()
    except (UnicodeDecodeError, binascii.Error, ValueError):
        der = contents
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise UsageProblemError(f"{field} ({option}): {path!r} is not a certificate{expected}") from None
    return text_form if text_form is not None else base64.b64encode(der).decode("ascii")


# --- commands --------------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def inventory(
    target: TargetArg = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    protocol: ProtocolOpt = "https",
    port: PortOpt = None,
    auth: AuthOpt = "negotiate",
    credential: CredentialOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    no_cert_validation: NoCertValidationOpt = False,
    spn_with_port: SpnWithPortOpt = False,
    jea_endpoint: JeaEndpointOpt = None,
    job_id: JobIdOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Submit an inventory job: list every certificate in a store on a Windows host.

    Without --wait, prints the job id (exit 0); with --wait, prints the result: a status line
    and a table of certificates (full thumbprints), or the JobResult JSON with --json.
    """
    _check_timeout(timeout)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    try:
        address = conn.check("inventory")
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    _submit_command(
        settings,
        conn,
        address,
        _job_fields("inventory", job_id),
        _Output(wait, timeout, _output_format(as_json, fmt)),
    )


@app.command(epilog=EXIT_CODES_HELP)
def add(
    target: TargetArg = None,
    certificate: Annotated[
        str | None,
        typer.Option(
            "--certificate",
            metavar="FILE",
            help="The certificate file: PKCS#12 (.pfx/.p12), DER, PEM or PKCS#7 (required). Sent"
            " encrypted with WINCERT_SECRET_KEYS.",
        ),
    ] = None,
    pfx_password_stdin: Annotated[
        bool,
        typer.Option(
            "--pfx-password-stdin", help="Read the PKCS#12 password from stdin (prompts on a terminal)."
        ),
    ] = False,
    pfx_password_file: Annotated[
        str | None,
        typer.Option(
            "--pfx-password-file",
            metavar="FILE",
            help="Read the PKCS#12 password from FILE (one trailing newline is dropped).",
        ),
    ] = None,
    pfx_no_password: Annotated[
        bool,
        typer.Option("--pfx-no-password", help="The file has no password (the default)."),
    ] = False,
    pfx_empty_password: Annotated[
        bool,
        typer.Option(
            "--pfx-empty-password",
            help="The PKCS#12 password is the empty string (Windows treats it differently from no password).",
        ),
    ] = False,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    site_name: SiteNameOpt = None,
    ip_address: IpAddressOpt = None,
    port_binding: PortBindingOpt = None,
    host_name: HostNameOpt = None,
    sni_flag: SniFlagOpt = None,
    provider_name: Annotated[
        str | None, typer.Option("--provider-name", help="CSP/KSP to import the private key into.")
    ] = None,
    instance_name: InstanceNameOpt = None,
    restart_service: RestartServiceOpt = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the certificate if it is already in the store.")
    ] = False,
    include_chain: IncludeChainOpt = False,
    exportable: Annotated[
        bool, typer.Option("--exportable", help="Import the private key as exportable.")
    ] = False,
    rewrap_legacy_pfx: Annotated[
        bool,
        typer.Option(
            "--rewrap-legacy-pfx",
            help="Re-wrap PBES2/AES PKCS#12 files with 3DES/SHA1 for hosts older than Server 2019.",
        ),
    ] = False,
    allow_takeover: AllowTakeoverOpt = False,
    renewal_thumbprint: Annotated[
        str | None,
        typer.Option(
            "--renewal-thumbprint",
            help="The certificate this one renews (IISU/WinSQL rebind from it; IISU deletes it when unused).",
        ),
    ] = None,
    protocol: ProtocolOpt = "https",
    port: PortOpt = None,
    auth: AuthOpt = "negotiate",
    credential: CredentialOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    no_cert_validation: NoCertValidationOpt = False,
    spn_with_port: SpnWithPortOpt = False,
    jea_endpoint: JeaEndpointOpt = None,
    job_id: JobIdOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Submit a Management Add job: import a certificate into a store (and bind it for IISU/WinSQL).

    PKCS#12 password: none by default (--pfx-no-password says so explicitly); --pfx-password-stdin
    or --pfx-password-file FILE to give one; --pfx-empty-password for the empty password. Only one
    secret can come from stdin: with --password-stdin (the WinRM password) give the PKCS#12
    password with --pfx-password-file. The certificate and passwords are encrypted with
    WINCERT_SECRET_KEYS before they are sent.

    Without --wait, prints the job id (exit 0); with --wait, the result and the thumbprint added.
    """
    _check_timeout(timeout)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    try:
        address = conn.check("add")
        modes = [
            option
            for option, given in (
                ("--pfx-password-stdin", pfx_password_stdin),
                ("--pfx-password-file", pfx_password_file is not None),
                ("--pfx-no-password", pfx_no_password),
                ("--pfx-empty-password", pfx_empty_password),
            )
            if given
        ]
        if len(modes) > 1:
            raise UsageProblemError(
                f"certificate.password: give at most one of {', '.join(modes)}; without any the file"
                " is sent with no password"
            )
        if pfx_password_stdin and password_stdin:
            raise UsageProblemError(
                "certificate.password (--pfx-password-stdin): stdin already carries the WinRM password"
                " (--password-stdin); give the PKCS#12 password with --pfx-password-file FILE, or the"
                " WinRM credential with --credential NAME"
            )
        entry = _Binding(
            store_type, site_name, ip_address, port_binding, host_name, sni_flag, instance_name,
            restart_service, allow_takeover, provider_name,
        ).entry_parameters()  # fmt: skip
        if certificate is None:
            raise UsageProblemError(
                "certificate (--certificate): missing; give the certificate file (.pfx, .p12, .cer,"
                " .pem, .p7b)"
            )
        contents = _read_certificate_file(certificate)
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)

    def seal(client: Client) -> dict[str, Any]:
        password: str | None = None
        if pfx_empty_password:
            password = ""
        elif pfx_password_stdin or pfx_password_file is not None:
            try:
                if pfx_password_file is not None:
                    password = _read_secret_file(pfx_password_file, "--pfx-password-file")
                else:
                    password = _read_password("PKCS#12 password: ")
            except UsageProblemError as exc:
                _fail(str(exc), ExitCode.USAGE)
            if not password:
                source = "--pfx-password-file" if pfx_password_file is not None else "--pfx-password-stdin"
                _fail(
                    f"certificate.password ({source}): the password read is empty; if the file's"
                    " password really is the empty string, give --pfx-empty-password instead",
                    ExitCode.USAGE,
                )
        return {"certificate": client.certificate_data(contents, password)}

    fields = _job_fields(
        "add",
        job_id,
        entry_parameters=entry,
        overwrite=overwrite,
        include_chain=include_chain,
        exportable=exportable,
        rewrap_legacy_pfx=rewrap_legacy_pfx,
        allow_takeover=allow_takeover,
        renewal_thumbprint=renewal_thumbprint,
    )
    placeholder = {"certificate": {"contents_plaintext": "-"}}
    _submit_command(
        settings,
        conn,
        address,
        fields,
        _Output(wait, timeout, _output_format(as_json, fmt)),
        restart_service=restart_service,
        sealed=_Sealed(placeholder, seal, "certificate", "--certificate"),
    )


@app.command(epilog=EXIT_CODES_HELP)
def remove(
    target: TargetArg = None,
    alias: Annotated[
        str | None,
        typer.Option(
            "--alias",
            help="What to remove (required): WinCert/WinSQL the thumbprint; IISU"
            " THUMBPRINT:SiteName:IP:Port:HostName as inventory shows it.",
        ),
    ] = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    instance_name: InstanceNameOpt = None,
    restart_service: RestartServiceOpt = False,
    protocol: ProtocolOpt = "https",
    port: PortOpt = None,
    auth: AuthOpt = "negotiate",
    credential: CredentialOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    no_cert_validation: NoCertValidationOpt = False,
    spn_with_port: SpnWithPortOpt = False,
    jea_endpoint: JeaEndpointOpt = None,
    job_id: JobIdOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Submit a Management Remove job: unbind (IISU, WinSQL) and delete a certificate.

    Removing a certificate that is not there succeeds (already_absent). Without --wait, prints
    the job id (exit 0); with --wait, the result and the thumbprint removed.
    """
    _check_timeout(timeout)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    try:
        address = conn.check("remove")
        entry = _entry_parameters(store_type, {"--instance-name": _instance_names(instance_name)})
        _check_applicable(store_type, {"--restart-service": restart_service})
        if alias is None:
            raise UsageProblemError(
                "alias (--alias): missing; give the certificate's thumbprint (IISU: its alias"
                " THUMBPRINT:SiteName:IP:Port:HostName from inventory)"
            )
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    fields = _job_fields("remove", job_id, alias=alias, entry_parameters=entry)
    _submit_command(
        settings,
        conn,
        address,
        fields,
        _Output(wait, timeout, _output_format(as_json, fmt)),
        restart_service=restart_service,
    )


_SAN_TYPES = ("dns", "ip", "email", "upn", "uri")


def _subject_alt_names(san: list[str] | None, legacy: str | None) -> list[dict[str, str]]:
    """``--san TYPE:VALUE`` (repeatable) and the legacy ``--sans "dns=a&ip=b"``, in that order."""
    entries: list[dict[str, str]] = []
    for given in san or []:
        kind, sep, value = given.partition(":")
        kind = kind.strip().lower()
        if not sep:
            raise UsageProblemError(
                f"sans (--san): {given!r} is not TYPE:VALUE; e.g. --san dns:www.contoso.com --san ip:10.0.0.1"
            )
        if kind not in _SAN_TYPES:
            raise UsageProblemError(
                f"sans (--san): unknown SAN type {kind!r} in {given!r}; use {', '.join(_SAN_TYPES)}"
            )
        entries.append({"type": kind, "value": value.strip()})
    if legacy is not None:
        try:
            entries.extend(parse_legacy_sans(legacy))
        except ValueError as exc:
            raise UsageProblemError(
                f"sans (--sans): {exc}; e.g. --sans 'dns=www.contoso.com&ip=10.0.0.1'"
            ) from None
    return entries


_COMPLETION_IN_MESSAGE = re.compile(r"completion job ([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})")


def _check_csr_out(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise UsageProblemError(
            f"--csr-out: cannot write {path!r}: "
            + ("it is a directory" if os.path.isdir(path) else f"no directory {folder!r}")
        )


def csr_subject(csr_pem: str) -> str:
    """The subject of a PEM PKCS#10 request (RFC 4514, in the order it was written).

    Raises:
        ValueError: ``csr_pem`` is not a PEM certificate request.
    """
    return x509.load_pem_x509_csr(csr_pem.encode("ascii")).subject.rfc4514_string()


def render_reenrollment(
    console: Console, result: JobResult, csr_out: str | None, *, err_console: Console | None = None
) -> None:
    """After a reenrollment result: write the CSR to ``csr_out`` and show its subject, where it
    went and the completion job chained signing runs (``wincert result ID --wait``).

    Raises:
        OSError: ``csr_out`` could not be written.
    """
    err = err_console or Console(stderr=True, highlight=False, soft_wrap=False)
    if result.csr is not None:
        try:
            console.print(Text(f"CSR subject: {csr_subject(result.csr)}"))
        except ValueError as exc:
            err.print(Text(f"warning: the result's csr is not a PEM certificate request ({exc})"))
        if csr_out is not None:
            with open(csr_out, "w", encoding="ascii", newline="\n") as handle:
                handle.write(result.csr if result.csr.endswith("\n") else result.csr + "\n")
            console.print(Text(f"CSR written to {csr_out}"))
        else:
            console.print(
                Text(f"CSR: give --csr-out FILE, or read 'csr' from `wincert result {result.job_id} --json`")
            )
    elif csr_out is not None:
        err.print(Text(f"warning: the result has no CSR; {csr_out} not written"))
    named = _COMPLETION_IN_MESSAGE.search(result.message)
    if named is not None:
        completion = named.group(1).lower()
        console.print(Text(f"completion job {completion}: wincert result {completion} --wait"))


@dataclass(frozen=True)
class _ReenrollExtras:
    """reenroll's additions to the standard report (see :class:`_Extras`)."""

    csr_out: str | None

    def submitted(self, job: AnyJob) -> tuple[dict[str, str], list[str]]:
        if not isinstance(job, ReenrollmentJob) or job.signer is None:
            return {}, []
        completion = job.completion_job_id
        line = (
            f"completion job {completion} (signed by {job.signer.task}): wincert result {completion} --wait"
        )
        return {"completion_job_id": str(completion)}, [line]

    def finished(self, result: JobResult, fmt: OutputFormat) -> None:
        # json / keyfactor: stdout stays one JSON document; the file is still written
        console = _console() if fmt is OutputFormat.TABLE else Console(file=io.StringIO())
        try:
            render_reenrollment(console, result, self.csr_out)
        except OSError as exc:
            _fail(
                f"--csr-out: cannot write {self.csr_out!r}: {exc.strerror or exc}; the CSR is in"
                f" `wincert result {result.job_id} --json`",
                ExitCode.ERROR,
            )


ProviderNameOpt = Annotated[
    str | None,
    typer.Option(
        "--provider-name",
        help="KSP/CSP the key is generated in (default Microsoft Software Key Storage Provider).",
    ),
]


@app.command(epilog=EXIT_CODES_HELP)
def reenroll(
    target: TargetArg = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            help="X.500 subject (required), e.g. 'CN=web01.contoso.com, O=\"Contoso, Inc\"'.",
        ),
    ] = None,
    key_algorithm: Annotated[
        str, typer.Option("--key-algorithm", help="RSA (default), ECDSA_P256 or ECDSA_P384.")
    ] = "RSA",
    key_length: Annotated[
        int | None,
        typer.Option("--key-length", help="RSA key size: 2048 (default), 3072 or 4096; not for ECDSA."),
    ] = None,
    provider_name: ProviderNameOpt = None,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            metavar="TYPE:VALUE",
            help="Subject alternative name; repeatable. TYPE: dns, ip, email, upn or uri"
            " (e.g. dns:www.contoso.com, ip:10.0.0.1).",
        ),
    ] = None,
    legacy_sans: Annotated[
        str | None,
        typer.Option(
            "--sans", metavar="'dns=A&ip=B'", help="SANs in the peer's legacy form (with --san: added after)."
        ),
    ] = None,
    signer: Annotated[
        str | None,
        typer.Option(
            "--signer",
            metavar="TASK",
            help="Celery task that signs the CSR; the worker then installs the certificate itself"
            " (the completion job is named in the result).",
        ),
    ] = None,
    signer_queue: Annotated[
        str | None, typer.Option("--signer-queue", metavar="QUEUE", help="The --signer task's queue.")
    ] = None,
    csr_out: Annotated[
        str | None,
        typer.Option("--csr-out", metavar="FILE", help="With --wait: write the CSR (PEM) to FILE."),
    ] = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    site_name: SiteNameOpt = None,
    ip_address: IpAddressOpt = None,
    port_binding: PortBindingOpt = None,
    host_name: HostNameOpt = None,
    sni_flag: SniFlagOpt = None,
    instance_name: InstanceNameOpt = None,
    restart_service: RestartServiceOpt = False,
    allow_takeover: AllowTakeoverOpt = False,
    protocol: ProtocolOpt = "https",
    port: PortOpt = None,
    auth: AuthOpt = "negotiate",
    credential: CredentialOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    no_cert_validation: NoCertValidationOpt = False,
    spn_with_port: SpnWithPortOpt = False,
    jea_endpoint: JeaEndpointOpt = None,
    job_id: JobIdOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Submit a reenrollment job: the host generates a key pair and returns a CSR (PKCS#10).

    The key stays pending on the host. Sign the CSR and install the certificate with
    `wincert complete`, or give --signer TASK to have the worker chain signing and installation
    (binding with the entry parameters given here). Without --wait, prints the job id (exit 0);
    with --wait, the result, the CSR's subject and (--csr-out) where the CSR was written.
    """
    _check_timeout(timeout)
    output = _output_format(as_json, fmt)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    try:
        address = conn.check("reenroll")
        entry = _Binding(
            store_type, site_name, ip_address, port_binding, host_name, sni_flag, instance_name,
            restart_service, allow_takeover,
        ).entry_parameters()  # fmt: skip
        if subject is None:
            raise UsageProblemError(
                "subject (--subject): missing; give the X.500 subject, e.g. --subject"
                " 'CN=web01.contoso.com, O=\"Contoso, Inc\"'"
            )
        sans = _subject_alt_names(san, legacy_sans)
        if signer_queue is not None and signer is None:
            raise UsageProblemError("signer.queue (--signer-queue): also give --signer TASK")
        if csr_out is not None:
            if not wait:
                raise UsageProblemError(
                    "--csr-out: the CSR comes with the result; add --wait (or read 'csr' from"
                    " `wincert result ID --json` later)"
                )
            _check_csr_out(csr_out)
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    fields = _job_fields(
        "reenrollment",
        job_id,
        subject=subject,
        key_algorithm=key_algorithm.strip().upper(),
        key_length=key_length,
        provider_name=provider_name,
        sans=sans,
        entry_parameters=entry,
        signer=None if signer is None else {"task": signer, "queue": signer_queue},
        allow_takeover=allow_takeover,
    )
    _submit_command(
        settings,
        conn,
        address,
        fields,
        _Output(wait, timeout, output, extras=_ReenrollExtras(csr_out)),
        restart_service=restart_service,
    )


@app.command(epilog=EXIT_CODES_HELP)
def complete(
    target: TargetArg = None,
    certificate: Annotated[
        str | None,
        typer.Option(
            "--certificate",
            metavar="FILE",
            help="The issued certificate (required): PEM (its chain may follow) or DER.",
        ),
    ] = None,
    chain: Annotated[
        list[str] | None,
        typer.Option(
            "--chain",
            metavar="FILE",
            help="Issuer certificates, PEM (one or more) or DER; repeatable. Installed with --include-chain.",
        ),
    ] = None,
    request_job_id: Annotated[
        str | None,
        typer.Option(
            "--request-job-id",
            metavar="UUID",
            help="The reenroll job that made the key (a certificate pairing with another is a warning).",
        ),
    ] = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    site_name: SiteNameOpt = None,
    ip_address: IpAddressOpt = None,
    port_binding: PortBindingOpt = None,
    host_name: HostNameOpt = None,
    sni_flag: SniFlagOpt = None,
    instance_name: InstanceNameOpt = None,
    restart_service: RestartServiceOpt = False,
    allow_takeover: AllowTakeoverOpt = False,
    include_chain: IncludeChainOpt = False,
    protocol: ProtocolOpt = "https",
    port: PortOpt = None,
    auth: AuthOpt = "negotiate",
    credential: CredentialOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    no_cert_validation: NoCertValidationOpt = False,
    spn_with_port: SpnWithPortOpt = False,
    jea_endpoint: JeaEndpointOpt = None,
    job_id: JobIdOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Submit a reenrollment completion job: install the signed certificate with its pending key.

    Then binds it (IISU with the entry parameters, WinSQL honouring --restart-service). A
    certificate whose key no pending request holds fails with no_matching_request. Without
    --wait, prints the job id (exit 0); with --wait, the result and the thumbprint installed.
    """
    _check_timeout(timeout)
    output = _output_format(as_json, fmt)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    try:
        address = conn.check("complete")
        entry = _Binding(
            store_type, site_name, ip_address, port_binding, host_name, sni_flag, instance_name,
            restart_service, allow_takeover,
        ).entry_parameters()  # fmt: skip
        if certificate is None:
            raise UsageProblemError(
                "certificate (--certificate): missing; give the issued certificate file (PEM or DER)"
            )
        leaf = _signed_certificate_text(certificate, "certificate", "--certificate")
        issuers = [_signed_certificate_text(path, "chain", "--chain") for path in chain or []]
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    fields = _job_fields(
        "reenrollment_complete",
        job_id,
        certificate=leaf,
        chain=issuers,
        request_job_id=request_job_id,
        entry_parameters=entry,
        include_chain=include_chain,
        allow_takeover=allow_takeover,
    )
    _submit_command(
        settings, conn, address, fields, _Output(wait, timeout, output), restart_service=restart_service
    )


def _read_keyfactor_file(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageProblemError(f"--keyfactor: cannot read {path!r}: {reason}") from None


@app.command(epilog=EXIT_CODES_HELP)
def submit(
    keyfactor: Annotated[
        str | None,
        typer.Option(
            "--keyfactor",
            metavar="FILE",
            help="A Keyfactor orchestrator job configuration (JSON; - reads stdin): Inventory,"
            " Management Add/Remove or Reenrollment for WinCert, IISU (IISBin) or WinSql stores.",
        ),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Submit the job a Keyfactor orchestrator job configuration describes.

    The server password and the certificate are encrypted with WINCERT_SECRET_KEYS before they
    are sent; empty ServerUsername/ServerPassword mean the worker's own identity. What the
    conversion changed or ignored is printed as "note:" lines on stderr. Without --wait, prints
    the job id (exit 0); with --wait, the result (--format keyfactor: Keyfactor's JobResult with
    the configuration's JobHistoryId, plus the inventory items).
    """
    _check_timeout(timeout)
    output = _output_format(as_json, fmt)
    settings = _load_settings()
    try:
        if keyfactor is None:
            raise UsageProblemError("--keyfactor: missing; give the Keyfactor job configuration FILE (JSON)")
        text = _read_keyfactor_file(keyfactor)
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    client = Client(settings)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # shown as notes below
                converted = parse_keyfactor(text, client)
        except KeyfactorConfigError as exc:
            for path, message in exc.problems:
                typer.echo(f"error: {path}: {message}", err=True)
            raise typer.Exit(int(ExitCode.USAGE)) from None
        for note in converted.notes:
            typer.echo(f"note: {note}", err=True)
        try:
            prepared = client.prepare(converted.job)
        except ValidationError as exc:  # pragma: no cover - parse_keyfactor validated it
            _fail_validation(exc)
        except PlaintextSecretRefusedError as exc:
            _fail(str(exc), ExitCode.USAGE)
        _send(client, settings, prepared, _Output(wait, timeout, output, converted.job_history_id))
    finally:
        client.close()


@app.command(epilog=EXIT_CODES_HELP)
def result(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id (UUID).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the result is available.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 60.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JobResult JSON (= --format json).")
    ] = False,
    fmt: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="table (default), json (the JobResult JSON) or keyfactor (Keyfactor's JobResult and,"
            " for inventory, CurrentInventoryItem list).",
        ),
    ] = None,
    job_history_id: Annotated[
        int | None,
        typer.Option("--job-history-id", help="Keyfactor JobHistoryId for --format keyfactor (default 0)."),
    ] = None,
) -> None:
    """Show a job's result (from the result backend, else the results stream).

    Exits 5 when there is no result yet (without --wait: immediately).
    """
    _check_timeout(timeout)
    output = _output_format(as_json, fmt)
    try:
        job_uuid = uuid.UUID(job_id.strip())
    except ValueError:
        _fail(f"JOB_ID: {job_id!r} is not a UUID (e.g. 0f8fad5b-d9cb-469f-a165-70867728950e)", ExitCode.USAGE)
    settings = _load_settings()
    with Client(settings) as client:

        def show() -> None:
            found = client.wait(job_uuid, timeout) if wait else client.result(job_uuid)
            if found is None:
                _fail(
                    f"no result yet for job {job_uuid}: it is queued or running, its result expired,"
                    " or the id is unknown; add --wait to wait for it",
                    ExitCode.NO_RESULT,
                )
            _show_result(found, output, job_history_id)

        _run(show, settings)


_WATCH_TITLES = ("Job id", "Status", "Code", "Items", "Target")


def _watch_table(width: int, *, header: bool) -> Table | None:
    """A one-row table with fixed column widths so rows printed one by one line up.

    ``None`` when the terminal is too narrow for the columns (rows are printed as text then).
    """
    flexible = width - (36 + 7 + 5) - 2 * 4
    if flexible < 20:
        return None
    code_width = min(22, flexible // 2)
    table = Table(box=None, show_header=header, header_style="bold", pad_edge=False, padding=(0, 1))
    widths = (36, 7, code_width, 5, flexible - code_width)
    for title, column_width in zip(_WATCH_TITLES, widths, strict=True):
        table.add_column(
            title, width=column_width, overflow="fold", justify="right" if title == "Items" else "left"
        )
    return table


def _print_watch_row(console: Console, found: JobResult) -> None:
    cells = [
        Text(str(found.job_id)),
        Text(found.status.value, style=_STATUS_STYLE[found.status]),
        Text(found.code.value),
        Text("" if found.items is None else str(len(found.items))),
        Text(f"{found.client_machine or ''} {found.store_path or ''}".strip()),
    ]
    row = _watch_table(console.width, header=False)
    if row is None:
        console.print(Text(" ").join(cells), overflow="fold")
        return
    row.add_row(*cells)
    console.print(row)


@app.command(epilog=EXIT_CODES_HELP)
def watch(
    from_id: Annotated[
        str,
        typer.Option("--from", help="Stream id to start after; $ = only new results, 0 = from the start."),
    ] = "$",
    count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after N results.")] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='One JSON line per result: {"stream_id": ..., "result": JobResult}.'),
    ] = False,
) -> None:
    """Follow the results stream (wincert:results), one row or JSON line per finished job.

    Runs until --count results were shown or Ctrl-C (exit 130).
    """
    settings = _load_settings()
    with Client(settings) as client:

        def follow() -> None:
            client.redis.ping()  # fail before printing anything when Redis is unreachable
            console = _console()
            if not as_json:
                header = _watch_table(console.width, header=True)
                console.print(header if header is not None else Text(" ".join(_WATCH_TITLES), style="bold"))
            results = client.iter_results(from_id=from_id, block_ms=5000)
            for shown, (stream_id, found) in enumerate(results, start=1):
                if as_json:
                    _print_json({"stream_id": stream_id, "result": found.model_dump(mode="json")})
                else:
                    _print_watch_row(console, found)
                if count is not None and shown >= count:
                    return

        _run(follow, settings)


@app.command()
def schema() -> None:
    """Print the job JSON Schema (draft 2020-12) for non-Python producers."""
    sys.stdout.write(export_job_schema())


@app.command()
def keygen() -> None:
    """Print a new Fernet key for WINCERT_SECRET_KEYS (producers and workers share it)."""
    typer.echo(generate_key())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``wincert`` script."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="wincert")
    except click.exceptions.Exit as exc:  # pragma: no cover - standalone mode exits itself
        sys.exit(exc.exit_code)


__all__ = [
    "EXIT_CODES_HELP",
    "ExitCode",
    "OutputFormat",
    "app",
    "csr_subject",
    "main",
    "parse_target",
    "render_reenrollment",
    "render_result",
    "validation_lines",
]
