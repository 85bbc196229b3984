"""The ``wincert`` command line: submit jobs, read and follow results, export the JSON Schema.

Settings come from ``WINCERT_*`` environment variables (:class:`producer.settings.ProducerSettings`).
Exit codes (also in ``wincert --help``): see :class:`ExitCode`.
"""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Annotated, Any, NoReturn

import click
import typer
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
from producer.messages import CertificateItem, JobResult, Status
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
    "job_id": "--job-id",
}
_TAGS = {"inventory", "named", "inline"}

app = typer.Typer(
    name="wincert",
    help="Submit WinCert Orchestrator jobs and read their results. Settings: WINCERT_* variables.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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
        shown_input = error.get("input")
        if (
            error["type"] not in {"value_error", "missing", "extra_forbidden"}
            and "credential" not in field
            and isinstance(shown_input, str | int)
            and not isinstance(shown_input, bool)
        ):
            message = f"{message} (got {shown_input!r})"
        option = _FIELD_OPTIONS.get(field)
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


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    text = sys.stdin.read()
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
    """Print the status line, warnings and (for inventory) the certificate table."""
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


def _show_result(result: JobResult, as_json: bool) -> NoReturn:
    if as_json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        render_result(_console(), result)
    _exit_for(result)


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


# --- commands --------------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def inventory(
    target: Annotated[
        str | None,
        typer.Argument(metavar="HOST[:PORT]", help="Windows host: name, IPv4, [IPv6], optionally :PORT."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Same as the HOST[:PORT] argument.")] = None,
    store_path: Annotated[
        str | None,
        typer.Option("--store-path", help="LocalMachine store: My, Root, WebHosting, ... (required)"),
    ] = None,
    store_type: Annotated[
        str, typer.Option("--store-type", help="Store type (this version: WinCert).")
    ] = "WinCert",
    protocol: Annotated[str, typer.Option("--protocol", help="WinRM transport: http or https.")] = "https",
    port: Annotated[
        int | None, typer.Option("--port", help="WinRM port 1-65535; default 5985 (http) / 5986 (https).")
    ] = None,
    auth: Annotated[
        str,
        typer.Option("--auth", help="negotiate, ntlm, kerberos, basic, credssp or certificate."),
    ] = "negotiate",
    credential: Annotated[
        str | None, typer.Option("--credential", help="Named credential the worker resolves.")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="Inline credential user (with --password-stdin).")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from stdin (encrypted with WINCERT_SECRET_KEYS before sending).",
        ),
    ] = False,
    no_cert_validation: Annotated[
        bool, typer.Option("--no-cert-validation", help="Do not validate the HTTPS listener certificate.")
    ] = False,
    spn_with_port: Annotated[
        bool, typer.Option("--spn-with-port", help="Kerberos SPN HTTP/host:port.")
    ] = False,
    jea_endpoint: Annotated[
        str | None, typer.Option("--jea-endpoint", help="PSRP configuration (JEA endpoint) name.")
    ] = None,
    job_id: Annotated[
        str | None, typer.Option("--job-id", help="Job id (UUID, the idempotency key); default: new.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result and show it.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Submit an inventory job: list every certificate in a store on a Windows host.

    Without --wait, prints the job id (exit 0); with --wait, prints the result: a status line
    and a table of certificates (full thumbprints), or the JobResult JSON with --json.
    """
    _check_timeout(timeout)
    settings = _load_settings()
    try:
        if target is not None and host is not None:
            raise UsageProblemError("store.client_machine: give the host once, as HOST[:PORT] or --host")
        given = target if target is not None else host
        if given is None:
            raise UsageProblemError(
                "store.client_machine (HOST or --host): missing; give the Windows host, e.g."
                " `wincert inventory web01.contoso.com --store-path My`"
            )
        host_name, target_port = parse_target(given)
        if target_port is not None and port is not None and target_port != port:
            raise UsageProblemError(
                f"store.port: given twice ({target_port} in HOST:PORT, {port} in --port); give it once"
            )
        if store_path is None:
            raise UsageProblemError(
                "store.store_path (--store-path): missing; name a store such as My or WebHosting"
            )
        if credential is not None and (username is not None or password_stdin):
            raise UsageProblemError(
                "store.credential: give either --credential NAME or --username with --password-stdin"
            )
        if username is not None and not password_stdin:
            raise UsageProblemError(
                "store.credential (--username): also give --password-stdin and pipe the password in"
                " (there is no --password flag, so it never appears in the process list)"
            )
        if password_stdin and username is None:
            raise UsageProblemError("store.credential (--password-stdin): also give --username")
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)

    client = Client(settings)
    try:
        store: dict[str, Any] = {
            "store_type": store_type,
            "client_machine": host_name,
            "store_path": store_path,
            "protocol": protocol,
            "port": target_port if target_port is not None else port,
            "auth": auth,
            "cert_validation": not no_cert_validation,
            "spn_with_port": spn_with_port,
            "jea_endpoint": jea_endpoint,
        }
        if credential is not None:
            store["credential"] = {"kind": "named", "name": credential}
        elif username is not None:
            if not settings.has_secret_keys and not settings.allow_plaintext_secrets:
                _fail(
                    "store.credential (--password-stdin): cannot send an inline password:"
                    f" {ENV_PREFIX}SECRET_KEYS is not set (make a key with `wincert keygen` and give"
                    f" the workers the same keys), and {ENV_PREFIX}ALLOW_PLAINTEXT_SECRETS is off"
                    " (development only); or use --credential NAME",
                    ExitCode.USAGE,
                )
            password = _read_password()
            if not password:
                _fail(
                    "store.credential (--password-stdin): the password read from stdin is empty",
                    ExitCode.USAGE,
                )
            try:
                store["credential"] = client.inline_credential(username, password)
            except ValidationError as exc:
                _fail_validation(exc, prefix="store.credential")
            except (PlaintextSecretRefusedError, SecretKeyError) as exc:
                _fail(f"store.credential: {exc}", ExitCode.USAGE)
        job: dict[str, Any] = {"job_type": "inventory", "store": store}
        if job_id is not None:
            job["job_id"] = job_id
        try:
            prepared = client.prepare(job)
        except ValidationError as exc:
            _fail_validation(exc)
        except PlaintextSecretRefusedError as exc:
            _fail(str(exc), ExitCode.USAGE)

        def submit_and_show() -> None:
            submitted = client.submit(prepared)
            if not wait:
                if as_json:
                    submitted_at = prepared.submitted_at
                    _print_json(
                        {
                            "job_id": str(submitted),
                            "queue": settings.queue,
                            "submitted_at": submitted_at.isoformat() if submitted_at else None,
                        }
                    )
                else:
                    s = prepared.store
                    typer.echo(
                        f"submitted job {submitted} (inventory of {s.store_type.value} {s.store_path!r} on"
                        f" {endpoint(s)}) to queue {settings.queue}"
                    )
                    typer.echo(f"result: wincert result {submitted} --wait")
                return
            _show_result(client.wait(submitted, timeout), as_json)

        _run(submit_and_show, settings)
    finally:
        client.close()


@app.command(epilog=EXIT_CODES_HELP)
def result(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id (UUID).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the result is available.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JobResult JSON.")] = False,
) -> None:
    """Show a job's result (from the result backend, else the results stream).

    Exits 5 when there is no result yet (without --wait: immediately).
    """
    _check_timeout(timeout)
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
            _show_result(found, as_json)

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


__all__ = ["EXIT_CODES_HELP", "ExitCode", "app", "main", "parse_target", "render_result", "validation_lines"]
