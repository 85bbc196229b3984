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
    details.append(f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}")
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
_MIN_BINDING_WIDTH = 16

_PLAIN_COLUMNS = ("Thumbprint", "Not after", "Key", "Subject")
_PLAIN_IIS_COLUMNS = ("Thumbprint", "Not after", "Key", "Site", "IP address", "Port", "Host name", "Subject")


def binding_of(item: CertificateItem) -> tuple[str, str, str, str] | None:
    """An IISU item's binding as (site, IP address, port, host name); None for other items.

    Read from the peer's parameters the worker sets (``SiteName``, ``IPAddress``, ``Port``,
    ``HostName``); an empty host name is a binding without SNI host.
    """
    params = item.parameters
    if "SiteName" not in params:
        return None
    return (
        str(params.get("SiteName") or ""),
        str(params.get("IPAddress") or "*"),
        str(params.get("Port") or ""),
        str(params.get("HostName") or ""),
    )


def _binding_text(binding: tuple[str, str, str, str]) -> str:
    """``Site IP:Port:HostName`` (IIS binding information after the site name)."""
    site, ip, port, host = binding
    return f"{site} {ip}:{port}:{host}"


def _render_items(console: Console, items: Sequence[CertificateItem]) -> None:
    """Certificates as a table; as stacked blocks when the terminal is too narrow for one; as
    tab-separated rows under a header row on a plain console (``soft_wrap``: not a terminal,
    see :func:`producer.cli.base.plain_output`). IISU items add their binding: site, IP
    address, port and host name.

    Column widths are fixed by us, not measured by rich: rich clamps measured widths to
    ``min_width`` after shrinking a table, which renders it wider than the terminal and crops
    the lines. With fixed widths the thumbprint column is always exactly 40 characters.
    """
    bindings = [binding_of(item) for item in items]
    with_binding = any(b is not None for b in bindings)
    if console.soft_wrap:
        # written as they are: rich's print would expand the tabs
        console.file.write("\t".join(_PLAIN_IIS_COLUMNS if with_binding else _PLAIN_COLUMNS) + "\n")
        for item, binding in zip(items, bindings, strict=True):
            cells = [
                item.thumbprint,
                item.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "yes" if item.has_private_key else "no",
            ]
            if with_binding:
                cells.extend(binding or ("", "", "", ""))
            cells.append(item.subject)
            console.file.write("\t".join(cell.replace("\t", " ") for cell in cells) + "\n")
        return
    gaps = (4 if with_binding else 3) * 2  # padding between the columns, none at the edges
    flexible = console.width - (_THUMBPRINT_WIDTH + _DATE_WIDTH + _KEY_WIDTH + gaps)
    binding_width = 0
    if with_binding:
        longest = max(len(_binding_text(b)) for b in bindings if b is not None)
        binding_width = max(_MIN_BINDING_WIDTH, min(longest, flexible - _MIN_SUBJECT_WIDTH))
    subject_width = flexible - binding_width
    if subject_width < _MIN_SUBJECT_WIDTH:
        for item, binding in zip(items, bindings, strict=True):
            # Text wraps at the terminal width and folds (never crops) a thumbprint that does
            # not fit on one line.
            console.print(Text(item.thumbprint, style="bold", overflow="fold"))
            console.print(
                Text(
                    f"  not after {_utc(item.not_after)} UTC | key {'yes' if item.has_private_key else 'no'}",
                    overflow="fold",
                )
            )
            if binding is not None:
                console.print(Text(f"  binding {_binding_text(binding)}", overflow="fold"))
            console.print(Text(f"  {item.subject}", overflow="fold"))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("Thumbprint", width=_THUMBPRINT_WIDTH, no_wrap=True)
    table.add_column("Not after", width=_DATE_WIDTH, no_wrap=True)
    table.add_column("Key", width=_KEY_WIDTH, no_wrap=True)
    if with_binding:
        table.add_column("Binding", width=binding_width, overflow="fold")
    table.add_column("Subject", width=subject_width, overflow="fold")
    for item, binding in zip(items, bindings, strict=True):
        row = [
            Text(item.thumbprint),
            Text(item.not_after.strftime("%Y-%m-%d")),
            Text("yes" if item.has_private_key else "no"),
        ]
        if with_binding:
            row.append(Text(_binding_text(binding) if binding is not None else ""))
        row.append(Text(item.subject))
        table.add_row(*row)
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
