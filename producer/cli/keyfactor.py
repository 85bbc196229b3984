"""``wincert submit --keyfactor``: run a Keyfactor orchestrator job configuration."""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

import typer
from pydantic import ValidationError

from producer.cli.base import (
    ExitCode,
    UsageProblemError,
    _check_timeout,
    _fail,
    _fail_validation,
    _load_settings,
)
from producer.cli.options import OutputOptions, option_groups
from producer.cli.submitting import _Output, _send
from producer.client import (
    Client,
    PlaintextSecretRefusedError,
)
from producer.keyfactor import KeyfactorConfigError, parse_keyfactor


def _read_keyfactor_file(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageProblemError(f"--keyfactor: cannot read {path!r}: {reason}") from None


@option_groups
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
    out: OutputOptions = OutputOptions(),
) -> None:
    """Submit the job a Keyfactor orchestrator job configuration describes.

    The server password and the certificate are encrypted with WINCERT_SECRET_KEYS before they
    are sent; empty ServerUsername/ServerPassword mean the worker's own identity. What the
    conversion changed or ignored is printed as "note:" lines on stderr. Without --wait, prints
    the job id (exit 0); with --wait, the result (--format keyfactor: Keyfactor's JobResult with
    the configuration's JobHistoryId, plus the inventory items).
    """
    _check_timeout(out.timeout)
    output = out.format()
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
        _send(client, settings, prepared, _Output.of(out, output, job_history_id=converted.job_history_id))
    finally:
        client.close()
