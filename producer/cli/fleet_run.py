"""``--fleet FILE [--group G] [--limit PATTERN]`` on the job commands: one job per matching store of
a fleet file (:mod:`producer.fleet`), a live progress bar, a summary table, an exit code that
reflects every result; ``--json`` one line per result."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from producer.cli.base import (
    _STATUS_STYLE,
    ExitCode,
    OutputFormat,
    UsageProblemError,
    _console,
    _fail,
    _run,
    live_progress,
    option_given,
    validation_lines,
)
from producer.cli.options import OptionGroup, _Connection
from producer.cli.submitting import _NO_KEYS, _Output, _Sealed, _submit_command
from producer.client import Client, PlaintextSecretRefusedError
from producer.fleet import FleetFileError, FleetTarget, load_fleet
from producer.messages import RESULTS_STREAM, AnyJob, JobResult, Status, parse_job
from producer.progress import JOB_STATE_KEY
from producer.secrets import SecretKeyError
from producer.settings import ProducerSettings

FleetOpt = Annotated[
    str | None,
    typer.Option(
        "--fleet",
        metavar="FILE",
        help="Run on every store of a fleet file (YAML: groups, hosts, connection defaults, stores)"
        " instead of one HOST: one job per store; with --wait a progress bar, a summary and an exit"
        " code for all of them.",
    ),
]
GroupOpt = Annotated[
    str | None, typer.Option("--group", metavar="GROUP", help="With --fleet: only this group.")
]
LimitOpt = Annotated[
    str | None,
    typer.Option(
        "--limit", metavar="PATTERN", help="With --fleet: only hosts matching PATTERN (web0*; several: a,b)."
    ),
]


@dataclass(frozen=True)
class FleetOptions(OptionGroup):
    """``--fleet FILE [--group G] [--limit PATTERN]`` (see :func:`fleet_targets`)."""

    fleet: FleetOpt = None
    group: GroupOpt = None
    limit: LimitOpt = None

    def targets(self, conn: _Connection, *, job_id: str | None) -> list[FleetTarget]:
        """:func:`fleet_targets` for these options; ``[]`` without ``--fleet``."""
        if self.fleet is None:
            return []
        return fleet_targets(self.fleet, self.group, self.limit, conn, job_id=job_id)


FieldsFor = Callable[[FleetTarget], dict[str, Any]]
"""The job fields (all but ``store``) for one store; raises UsageProblemError when an option does
not fit that store."""


def select_fleet(path: str, group: str | None, limit: str | None) -> list[FleetTarget]:
    """The stores of the fleet file ``path`` in ``group`` (None: all) whose host matches
    ``limit``; exits 2 naming the file's line or the option when the file or a selector is bad."""
    try:
        return load_fleet(path).select(group, limit)
    except FleetFileError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None
    except ValueError as exc:
        _fail(str(exc), ExitCode.USAGE)


def fleet_targets(
    path: str, group: str | None, limit: str | None, conn: _Connection, *, job_id: str | None
) -> list[FleetTarget]:
    """The stores to run on; exits 2 (naming the line or option) when there are none or the
    command line also names one host."""
    given = [
        option
        for option, value in (
            ("HOST", conn.target),
            ("--host", conn.host),
            ("--store-path", conn.store_path),
            ("--username", conn.username),
            ("--job-id", job_id),
        )
        if value is not None
    ]
    if given:
        _fail(
            f"--fleet: {', '.join(given)} cannot be combined with it (the fleet file names hosts and"
            " stores; each job gets its own id; credentials are names in the file)",
            ExitCode.USAGE,
        )
    targets = select_fleet(path, group, limit)
    by_type = option_given("store_type")
    if by_type:
        targets = [t for t in targets if t.store["store_type"] == conn.store_type]
    if not targets:
        _fail(
            f"--fleet: no store of {path} matches"
            + (f" --group {group}" if group else "")
            + (f" --limit {limit}" if limit else "")
            + (f" --store-type {conn.store_type}" if by_type else ""),
            ExitCode.USAGE,
        )
    return targets


def submit_one_or_fleet(
    settings: ProducerSettings,
    conn: _Connection,
    address: tuple[str, int | None],
    targets: list[FleetTarget],
    fields: dict[str, Any],
    entry_for: Callable[[str], dict[str, Any] | None],
    out: _Output,
    *,
    restart_service: bool = False,
    sealed: _Sealed | None = None,
) -> None:
    """A job command's last step. With ``--fleet`` (``targets`` not empty): :func:`run_fleet`, each
    store's ``entry_parameters`` from ``entry_for(its store type)`` (exits). Otherwise the one job
    (``fields``) to ``address`` (``_submit_command``)."""
    if targets:
        run_fleet(
            settings,
            conn,
            targets,
            lambda target: {**fields, "entry_parameters": entry_for(target.store["store_type"])},
            out,
            restart_service=restart_service,
            sealed=sealed,
        )
    _submit_command(settings, conn, address, fields, out, restart_service=restart_service, sealed=sealed)


def run_fleet(
    settings: ProducerSettings,
    conn: _Connection,
    targets: list[FleetTarget],
    fields_for: FieldsFor,
    out: _Output,
    *,
    restart_service: bool = False,
    sealed: _Sealed | None = None,
) -> NoReturn:
    """Validate every job first (nothing is sent if one is invalid), seal once, submit all, then
    report: job ids (without --wait) or progress, per-job results and a summary (with --wait)."""
    overrides = _connection_overrides(conn)
    jobs: list[tuple[FleetTarget, dict[str, Any]]] = []
    problems: list[str] = []
    for target in targets:
        store = {**target.store, **overrides, **({"restart_service": True} if restart_service else {})}
        try:
            job = {**fields_for(target), "store": store}
            parse_job({**job, **(sealed.placeholder if sealed else {})})
        except UsageProblemError as exc:
            problems.append(f"{target.label}: {exc}")
            continue
        except ValidationError as exc:
            problems += [f"{target.label}: {line}" for line in validation_lines(exc)]
            continue
        jobs.append((target, job))
    if problems:
        for line in problems:
            typer.echo(f"error: {line}", err=True)
        typer.echo(
            f"error: nothing was enqueued ({len(problems)} problem(s) in {len(targets)} stores)", err=True
        )
        raise typer.Exit(int(ExitCode.USAGE))
    if sealed is not None and not settings.has_secret_keys and not settings.allow_plaintext_secrets:
        _fail(f"{sealed.field} ({sealed.option}): cannot send it: {_NO_KEYS}", ExitCode.USAGE)

    client = Client(settings)
    code = ExitCode.OK
    try:
        extra: dict[str, Any] = {}
        if sealed is not None:
            try:
                extra = sealed.seal(client)
            except (PlaintextSecretRefusedError, SecretKeyError, ValueError) as exc:
                _fail(f"{sealed.field} ({sealed.option}): {exc}", ExitCode.USAGE)
        try:
            prepared = [(t, client.prepare({**job, **extra})) for t, job in jobs]
        except (ValidationError, PlaintextSecretRefusedError) as exc:  # pragma: no cover - checked above
            _fail(str(exc), ExitCode.USAGE)

        def submit_and_report() -> None:
            nonlocal code
            start = _stream_end(client)
            for _target, job in prepared:
                client.submit(job)
            if not out.wait:
                _print_submitted(prepared, out)
                return
            if out.quiet:
                for _target, job in prepared:
                    typer.echo(str(job.job_id))
            results = _collect(client, prepared, start, out)
            code = _report(prepared, results, out)

        _run(submit_and_report, settings)
    finally:
        client.close()
    raise typer.Exit(int(code))


def _connection_overrides(conn: _Connection) -> dict[str, Any]:
    """Connection options given on the command line override the fleet file (defaults do not)."""
    values = {
        "protocol": conn.protocol,
        "port": conn.port,
        "auth": conn.auth,
        "cert_validation": not conn.no_cert_validation,
        "spn_with_port": conn.spn_with_port,
        "jea_endpoint": conn.jea_endpoint,
    }
    names = {"cert_validation": "no_cert_validation"}
    overrides: dict[str, Any] = {}
    for field, value in values.items():
        if option_given(names.get(field, field)):
            overrides[field] = value
    if conn.credential is not None:
        overrides["credential"] = {"kind": "named", "name": conn.credential}
    return overrides


def _stream_end(client: Client) -> str:
    newest = cast(list[tuple[str, Any]], client.redis.xrevrange(RESULTS_STREAM, count=1))
    return newest[0][0] if newest else "0-0"


def _print_submitted(prepared: list[tuple[FleetTarget, AnyJob]], out: _Output) -> None:
    for target, job in prepared:
        if out.quiet:
            typer.echo(str(job.job_id))
        elif out.fmt is not OutputFormat.TABLE:
            typer.echo(
                f'{{"job_id": "{job.job_id}", "host": "{target.host}", "store_type":'
                f' "{target.store["store_type"]}", "store_path": {_json(target.store["store_path"])}}}'
            )
        else:
            typer.echo(
                f"{job.job_id}\t{target.host}\t{target.store['store_type']}\t{target.store['store_path']}"
            )


def _json(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _collect(
    client: Client, prepared: list[tuple[FleetTarget, AnyJob]], start: str, out: _Output
) -> dict[uuid.UUID, JobResult]:
    """Follow the results stream from before the first submit until every job has a result or
    ``out.timeout`` passed; ``--json`` prints each result as it comes; a terminal shows a bar."""
    pending = {job.job_id for _t, job in prepared}
    found: dict[uuid.UUID, JobResult] = {}
    deadline = time.monotonic() + out.timeout
    live = live_progress() and not out.quiet and out.fmt is OutputFormat.TABLE
    progress = Progress(
        TextColumn("[bold]fleet"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed, {task.fields[waiting]} waiting for a slot"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not live,
    )
    with progress:
        bar = progress.add_task("fleet", total=len(pending), failed=0, waiting=0)
        last, checked = start, 0.0
        while pending and time.monotonic() < deadline:
            block = int(max(0.05, min(0.5, deadline - time.monotonic())) * 1000)
            read = cast(
                list[tuple[str, list[tuple[str, dict[str, str]]]]],
                client.redis.xread({RESULTS_STREAM: last}, block=block, count=500),
            )
            for _stream, entries in read or []:
                for stream_id, fields in entries:
                    last = stream_id
                    result = client.entry_result(stream_id, fields)  # inline or by reference
                    if result is None:
                        continue
                    if result.job_id in pending:
                        pending.discard(result.job_id)
                        found[result.job_id] = result
                        if out.fmt is not OutputFormat.TABLE and not out.quiet:
                            typer.echo(result.model_dump_json())
            if live and time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                waiting = _waiting_for_slot(client, pending)
                failed = sum(r.status is Status.FAILURE for r in found.values())
                progress.update(bar, completed=len(found), failed=failed, waiting=waiting)
    return found


def _waiting_for_slot(client: Client, pending: set[uuid.UUID]) -> int:
    """Jobs that ran at least once but hold no host slot yet (``worker.state``'s hash)."""
    pipe = client.redis.pipeline(transaction=False)
    for job_id in pending:
        pipe.hmget(JOB_STATE_KEY.format(job_id=job_id), ["attempts", "granted"])
    return sum(1 for attempts, granted in pipe.execute() if attempts and not granted)


def _report(
    prepared: list[tuple[FleetTarget, AnyJob]], results: dict[uuid.UUID, JobResult], out: _Output
) -> ExitCode:
    """The summary (table, or nothing more with --json/-q) and the exit code: 4 when a job
    failed, else 5 when a job has no result yet, else 3 when one warned, else 0."""
    statuses = [results[j.job_id].status if j.job_id in results else None for _t, j in prepared]
    if out.fmt is not OutputFormat.TABLE:
        for _target, job in prepared:
            if job.job_id not in results:
                typer.echo(f'{{"job_id": "{job.job_id}", "status": null, "code": "no_result_yet"}}')
    elif not out.quiet:
        console = _console()
        rows = []
        for target, job in prepared:
            result = results.get(job.job_id)
            rows.append(
                (
                    target.host,
                    f"{target.store['store_type']} {target.store['store_path']}",
                    result.status.value if result else "pending",
                    result.code.value if result else "no_result_yet",
                    str(result.attempts) if result else "",
                    result.message
                    if result
                    else f"no result after {out.timeout:g} s: wincert result {job.job_id}",
                )
            )
        titles = ("Host", "Store", "Status", "Code", "Attempts", "Message")
        if console.soft_wrap:
            console.file.write("\t".join(titles) + "\n")
            for row in rows:
                console.file.write("\t".join(cell.replace("\t", " ") for cell in row) + "\n")
        else:
            table = Table(*titles, header_style="bold", pad_edge=False)
            for row in rows:
                style = _STATUS_STYLE.get(Status(row[2])) if row[2] in {s.value for s in Status} else "dim"
                table.add_row(
                    *(Text(c) for c in row[:2]), Text(row[2], style=style or ""), *(Text(c) for c in row[3:])
                )
            console.print(table)
        counts = {s.value: statuses.count(s) for s in Status}
        missing = statuses.count(None)
        summary = (
            f"{len(prepared)} stores: {counts['success']} success, {counts['warning']} warning,"
            f" {counts['failure']} failure"
        )
        console.print(Text(summary + (f", {missing} without result" if missing else "")))
    if Status.FAILURE in statuses:
        return ExitCode.FAILURE
    if None in statuses:
        return ExitCode.NO_RESULT
    if Status.WARNING in statuses:
        return ExitCode.WARNING
    return ExitCode.OK
