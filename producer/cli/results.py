"""``wincert result`` and ``wincert watch``: read and follow results."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from producer.cli.base import (
    _STATUS_STYLE,
    ExitCode,
    OutputFormat,
    _check_timeout,
    _console,
    _fail,
    _load_settings,
    _print_json,
    _run,
)
from producer.cli.render import _output_format, _show_result
from producer.cli.submitting import wait_for_result
from producer.client import (
    Client,
)
from producer.messages import (
    JobResult,
)


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
    """Show a job's result (its kept copy, else the results stream).

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
            found = wait_for_result(client, job_uuid, timeout) if wait else client.result(job_uuid)
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
    if console.soft_wrap:  # plain output: one tab-separated line, flushed for readers of a pipe
        fields = (
            str(found.job_id),
            found.status.value,
            found.code.value,
            "" if found.items is None else str(len(found.items)),
            f"{found.client_machine or ''} {found.store_path or ''}".strip(),
        )
        console.file.write("\t".join(f.replace("\t", " ") for f in fields) + "\n")
        console.file.flush()
        return
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
            if not as_json and console.soft_wrap:
                console.file.write("\t".join(_WATCH_TITLES) + "\n")
                console.file.flush()
            elif not as_json:
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
