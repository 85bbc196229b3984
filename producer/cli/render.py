"""Printing results: the status line, the certificate table, JSON and Keyfactor output."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from producer.cli.base import (
    _STATUS_EXIT,
    _STATUS_STYLE,
    ExitCode,
    OutputFormat,
    _console,
    _fail,
    _print_json,
    _utc,
)
from producer.keyfactor import keyfactor_output
from producer.messages import (
    CertificateItem,
    JobResult,
)


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
