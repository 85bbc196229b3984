"""Shared pieces of the ``wincert`` command line: the Typer app, exit codes, errors naming the
field and option, settings loading and the Redis error mapping."""

from __future__ import annotations

import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum, StrEnum
from typing import Any, NoReturn

import typer
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console

from producer.client import (
    BackendUnavailableError,
    ResultFormatError,
    ResultTimeoutError,
    TaskFailedError,
    redact_url,
)
from producer.messages import (
    Status,
)
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
    "check": "--check",
}
# Names in messages of whole-object errors (no field in the loc) -> the option to change.
_MESSAGE_NAMES = {
    "SniFlag": "--sni-flag",
    "HostName": "--host-name",
    "restart_service": "--restart-service",
}
_TAGS = {"inventory", "add", "remove", "reenrollment", "reenrollment_complete", "named", "inline"}

TYPER_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}
"""How ``wincert`` and its command groups (``wincert dead``) behave: help without arguments, no
shell-completion options, plain tracebacks and plain help text."""

app = typer.Typer(
    name="wincert",
    help="Submit WinCert Orchestrator jobs and read their results. Settings: WINCERT_* variables.",
    epilog=EXIT_CODES_HELP,
    **TYPER_SETTINGS,
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
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                name = ENV_PREFIX + "_".join(str(p) for p in error["loc"]).upper()
                message = f"{name}: {message}"
            typer.echo(f"error: {message}", err=True)  # a cross-field check names its variables
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


def plain_output() -> bool:
    """True when stdout is not a terminal and ``COLUMNS`` is not set (a pipe, a file, a script).

    Plain output is for programs: lines are never wrapped or folded, there are no styles or
    escape codes, and tables are tab-separated rows under a header row. Setting ``COLUMNS``
    asks for the terminal layout at that width even when piped.
    """
    return not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").strip()


def _console() -> Console:
    if plain_output():
        return Console(highlight=False, soft_wrap=True, color_system=None, emoji=False, markup=False)
    return Console(highlight=False, soft_wrap=False)


def live_progress() -> bool:
    """True when both stdout and stderr are terminals: ``--wait`` shows the job's state live
    (on stderr, erased when the result arrives)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _utc(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _run(action: Callable[[], None], settings: ProducerSettings) -> None:
    """Run ``action``, mapping connection and result errors to messages and exit codes."""
    try:
        action()
    except BackendUnavailableError as exc:
        _fail(str(exc), ExitCode.ERROR)
    except (OperationalError, RedisConnectionError, RedisTimeoutError) as exc:
        hint = ""
        if settings.broker_url.lower().startswith("rediss://") and "imeout" in str(exc):
            hint = "; with rediss:// the server must speak TLS (a plain Redis never answers the handshake)"
        _fail(
            f"cannot reach Redis at {redact_url(settings.broker_url)} ({ENV_PREFIX}BROKER_URL /"
            f" {ENV_PREFIX}RESULT_BACKEND): {exc}{hint}",
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


MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


def _check_timeout(timeout: float) -> None:
    """``--timeout`` must be a finite number of seconds in (0, one week]: ``nan`` would compare
    false with every deadline and ``inf`` would wait forever."""
    if not math.isfinite(timeout) or timeout <= 0 or timeout > MAX_TIMEOUT_SECONDS:
        _fail(
            f"--timeout: {timeout:g} is not a positive number of seconds (finite, at most"
            f" {MAX_TIMEOUT_SECONDS}: one week); give e.g. --timeout 120",
            ExitCode.USAGE,
        )


# --- options shared by the job commands -------------------------------------------------------
# Defined once and used by inventory, add, remove, reenroll and complete; _Connection and


def option_given(name: str) -> bool:
    """Whether the running command's parameter ``name`` (its Python name) came from the command
    line (not its default or the environment).

    Typer 0.29 runs its own copy of click (``typer._click``), so ``click.get_current_context``
    does not see its context; this is the one place that reaches into it (falling back to click).
    """
    context: Any = None
    try:
        from typer._click.globals import get_current_context

        context = get_current_context(silent=True)
    except ImportError:  # pragma: no cover - a typer that uses click itself
        pass
    if context is None:
        import click

        context = click.get_current_context(silent=True)
    if context is None:
        return False
    source = context.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
