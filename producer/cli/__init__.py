"""The ``wincert`` command line: submit jobs, read and follow results, export the JSON Schema.

Settings come from ``WINCERT_*`` environment variables (:class:`producer.settings.ProducerSettings`).
Exit codes (also in ``wincert --help``): see :class:`ExitCode`.

One module per command group; the commands are registered on :data:`app` below, in the order
``wincert --help`` lists them:

- :mod:`producer.cli.base` — the app, exit codes, error reporting, settings;
- :mod:`producer.cli.render` — result output (table, JSON, Keyfactor);
- :mod:`producer.cli.options`, :mod:`producer.cli.submitting`, :mod:`producer.cli.inputs` — what
  every job command shares: options, validate-seal-submit-report, reading files;
- :mod:`producer.cli.inventory`; :mod:`producer.cli.management` (add, remove);
  :mod:`producer.cli.reenroll` (reenroll, complete); :mod:`producer.cli.keyfactor` (submit);
  :mod:`producer.cli.results` (result, watch); :mod:`producer.cli.observe` (status, expiring,
  dead list, dead replay); :mod:`producer.cli.tools` (schema, keygen).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from typing import Annotated

import click
import typer

from producer.cli import inventory, keyfactor, management, observe, reenroll, results, schedule, serve, tools
from producer.cli.base import EXIT_CODES_HELP, ExitCode, OutputFormat, app, parse_target, validation_lines
from producer.cli.reenroll import csr_subject, render_reenrollment
from producer.cli.render import render_result


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"wincert {_version()}")
        raise typer.Exit()


def _version() -> str:
    try:
        return importlib.metadata.version("wincert-orchestrator")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown (not installed; pip install -e .)"


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Options before the command."""


# Commands whose help ends with the exit codes, in help order; then those without.
_JOB_COMMANDS: tuple[Callable[..., None], ...] = (
    inventory.inventory,
    management.add,
    management.remove,
    reenroll.reenroll,
    reenroll.complete,
    keyfactor.submit,
    results.result,
    results.watch,
)
_OTHER_COMMANDS: tuple[Callable[..., None], ...] = (
    observe.status,
    observe.expiring,
    tools.schema,
    tools.keygen,
    serve.intake,
    schedule.schedule,
)
for _command in _JOB_COMMANDS:
    app.command(epilog=EXIT_CODES_HELP)(_command)
for _command in _OTHER_COMMANDS:
    app.command()(_command)
app.add_typer(observe.dead_app, name="dead")


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
