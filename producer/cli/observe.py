"""An operator's view: ``wincert status``, ``wincert expiring``, ``wincert dead list|replay``.

Everything here reads Redis (the broker): queue lists, the per-host slot holders, the
dead-letter stream and the inventory state the workers keep (:mod:`producer.inventory_model`).
All of it is untrusted text: it is validated before use and printed as text, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from celery import Celery
from rich.console import Console
from rich.table import Table
from rich.text import Text

from producer import auth, dead_letters
from producer.cli.base import TYPER_SETTINGS, ExitCode, _console, _fail, _load_settings, _print_json, _run
from producer.client import Client
from producer.inventory_model import InventoryReader, parse_within
from producer.messages import DEAD_LETTER_STREAM, RESULTS_STREAM
from producer.redis_connection import merge_celery_options
from producer.settings import ProducerSettings

PRIORITY_LISTS = tuple(f"\x06\x16{step}" for step in (3, 6, 9))
"""kombu's Redis priority sub-lists of a queue (``<queue>\\x06\\x16<step>``)."""

dead_app = typer.Typer(
    name="dead",
    help="Dead letters: jobs the workers could not complete (stream wincert:dead).",
    **TYPER_SETTINGS,
)


def _print_table(console: Console, columns: tuple[str, ...], rows: Sequence[tuple[Text, ...]]) -> None:
    """A table on a terminal; on plain output (stdout not a terminal, README "Scripting the
    CLI") tab-separated rows under a header row, never wrapped (tabs and newlines in values
    become spaces)."""
    if console.soft_wrap:
        for cells in (columns, *(tuple(cell.plain for cell in row) for row in rows)):
            console.file.write("\t".join(" ".join(c.split()) for c in cells) + "\n")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


# --- wincert status ------------------------------------------------------------------------


def _status(settings: ProducerSettings, top: int, ping_timeout: float) -> dict[str, Any]:
    client = Client(settings).redis
    queue = settings.queue
    pipe = client.pipeline(transaction=False)
    for suffix in ("", *PRIORITY_LISTS):
        pipe.llen(f"{queue}{suffix}")
    pipe.hlen("unacked")
    pipe.xlen(DEAD_LETTER_STREAM)
    pipe.xlen(RESULTS_STREAM)
    pipe.xrevrange(DEAD_LETTER_STREAM, count=1)
    pipe.time()
    replies: list[Any] = pipe.execute()
    waiting = sum(_int(r) for r in replies[: 1 + len(PRIORITY_LISTS)])
    unacked, dead, results, newest, now = replies[1 + len(PRIORITY_LISTS) :]
    now_ms = _int(now[0]) * 1000 + _int(now[1]) // 1000
    keys = [str(k) for k in client.scan_iter(match="wincert:sem:{*}:holders", count=1000)]
    counts: list[Any] = []
    if keys:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(key, now_ms, "+inf")
        counts = pipe.execute()
    hosts = sorted(
        (
            (key[len("wincert:sem:{") : -len("}:holders")], _int(n))
            for key, n in zip(keys, counts, strict=True)
        ),
        key=lambda item: (-item[1], item[0]),
    )
    busy = [(h, n) for h, n in hosts if n > 0]
    app = Celery("wincert-status", set_as_current=False)
    app.conf.update(merge_celery_options({"broker_url": settings.broker_url}, settings.redis_connection))
    try:
        replies_ping = app.control.ping(timeout=ping_timeout) or []
    finally:
        app.close()
    workers = sorted(str(name) for reply in replies_ping for name in (reply or {}))
    newest_at = ""
    if newest:
        fields = newest[0][1] if isinstance(newest[0][1], dict) else {}
        newest_at = str(fields.get("at", ""))[:40]
    return {
        "queue": {"name": queue, "waiting": waiting, "unacked": _int(unacked)},
        "workers": workers,
        "hosts": {
            "busy": len(busy),
            "busiest": [{"host": h[:300], "slots_in_use": n} for h, n in busy[:top]],
        },
        "dead_letters": {"count": _int(dead), "newest_at": newest_at or None},
        "results_stream_length": _int(results),
    }


def status(
    top: Annotated[
        int, typer.Option("--top", min=1, max=1000, help="How many of the busiest hosts to show.")
    ] = 10,
    ping_timeout: Annotated[
        float, typer.Option("--ping-timeout", min=0.1, max=60, help="Seconds to wait for workers to answer.")
    ] = 1.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Queue depth, workers online, the busiest hosts' slots in use, dead letters.

    Workers are found by a Celery ping (remote control must be enabled, the default).
    """
    settings = _load_settings()

    def show() -> None:
        data = _status(settings, top, ping_timeout)
        if as_json:
            _print_json(data)
            return
        console = _console()
        q = data["queue"]
        console.print(
            Text(
                f"queue {q['name']}: {q['waiting']} waiting,"
                f" {q['unacked']} delivered and not yet acknowledged"
            )
        )
        workers = data["workers"]
        console.print(
            Text(f"workers online: {len(workers)}" + (f" ({', '.join(workers)})" if workers else ""))
        )
        dead = data["dead_letters"]
        newest = f", newest {dead['newest_at']}" if dead["newest_at"] else ""
        console.print(Text(f"dead letters: {dead['count']}{newest} (wincert dead list)"))
        console.print(Text(f"hosts with slots in use: {data['hosts']['busy']}"))
        if data["hosts"]["busiest"]:
            _print_table(
                console,
                ("Host", "Slots in use"),
                [(Text(row["host"]), Text(str(row["slots_in_use"]))) for row in data["hosts"]["busiest"]],
            )

    _run(show, settings)


# --- wincert expiring ------------------------------------------------------------------------


def expiring(
    within: Annotated[
        str,
        typer.Option(
            "--within", help="Window from now: 30d, 12h, 2w, or seconds. Expired ones are included."
        ),
    ] = "30d",
    store_type: Annotated[
        str | None, typer.Option("--store-type", help="Only WinCert, IISU or WinSQL stores.")
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Only this host (case-insensitive).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, soonest first.")] = False,
) -> None:
    """Certificates expiring within a window, soonest first, from the workers' inventory state.

    The state holds each store's latest inventory and every change jobs made since; stores never
    inventoried are not listed (run wincert inventory on them).
    """
    try:
        window = parse_within(within)
    except ValueError as exc:
        _fail(f"--within: {exc}", ExitCode.USAGE)
    kinds = {"wincert": "WinCert", "iisu": "IISU", "winsql": "WinSQL"}
    wanted_type = None
    if store_type is not None:
        wanted_type = kinds.get(store_type.strip().lower())
        if wanted_type is None:
            _fail(f"--store-type: {store_type!r} is not WinCert, IISU or WinSQL", ExitCode.USAGE)
    settings = _load_settings()

    def show() -> None:
        now = datetime.now(UTC)
        reader = InventoryReader(Client(settings).redis)
        rows = [
            r
            for r in reader.expiring(window, now=now)
            if (wanted_type is None or r.store_type == wanted_type)
            and (host is None or r.host == host.strip().lower())
        ]
        if as_json:
            _print_json(
                [{**r.as_json(), "seconds_left": round((r.not_after - now).total_seconds())} for r in rows]
            )
            return
        console = _console()
        if not rows:
            console.print(Text(f"no certificate in the inventory state expires within {within}"))
            return
        columns = (
            "Not after (UTC)",
            "Days left",
            "Host",
            "Store type",
            "Store path",
            "Subject CN",
            "Thumbprint",
        )
        cells = []
        for r in rows:
            days = (r.not_after - now).total_seconds() / 86400
            cells.append(
                (
                    Text(r.not_after.strftime("%Y-%m-%d %H:%M")),
                    Text(f"{days:.1f}", style="bold red" if days < 7 else ("yellow" if days < 14 else "")),
                    Text(r.host),
                    Text(r.store_type),
                    Text(r.store_path),
                    Text(r.subject_cn),
                    Text(r.thumbprint),
                )
            )
        _print_table(console, columns, cells)

    _run(show, settings)


# --- wincert dead list / replay --------------------------------------------------------------


@dead_app.command("list")
def dead_list(
    count: Annotated[int, typer.Option("--count", min=1, max=100_000, help="How many, newest first.")] = 50,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Only this reason: invalid_job, max_deliveries, slot_deadline, ..."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array (jobs without secrets).")
    ] = False,
) -> None:
    """List dead letters, newest first (ENTRY is what wincert dead replay takes)."""
    settings = _load_settings()

    def show() -> None:
        letters = dead_letters.read_dead_letters(Client(settings).redis, count, reason)
        if as_json:
            _print_json([letter.as_json() for letter in letters])
            return
        console = _console()
        if not letters:
            console.print(Text("no dead letters"))
            return
        cells = []
        for letter in letters:
            s = letter.summary()
            store = " ".join(x for x in (s["store_type"], s["client_machine"], s["store_path"]) if x)
            replayed = f" [replayed as {letter.replayed}]" if letter.replayed else ""
            cells.append(
                (
                    Text(letter.entry_id),
                    Text(letter.at[:19]),
                    Text(letter.job_id),
                    Text(letter.reason),
                    Text(letter.code),
                    Text(s["job_type"]),
                    Text(store),
                    Text(letter.message[:300] + replayed),
                )
            )
        _print_table(console, ("Entry", "At", "Job id", "Reason", "Code", "Job", "Store", "Message"), cells)

    _run(show, settings)


@dead_app.command("replay")
def dead_replay(
    ident: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's entry id, or its job id.")],
    new_id: Annotated[
        bool,
        typer.Option("--new-id", help="Submit a copy under a fresh job id (the old id keeps its failure)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; submit nothing.")
    ] = False,
) -> None:
    """Submit a dead-lettered job again.

    Under the same job id only when that is safe: the job has not finished successfully since,
    is not running and not queued. Its stored failure, delivery counts and Celery result are then
    cleared, so the worker runs it afresh (jobs are idempotent by job id). Otherwise, or with
    --new-id, a copy goes under a new id. Jobs whose secrets were removed from the dead letter
    cannot be replayed: submit them again from their source. Prints the job id to wait for.
    """
    settings = _load_settings()

    def act() -> None:
        with Client(settings) as client:
            letter = dead_letters.find_dead_letter(client.redis, ident)
            if letter is None:
                _fail(
                    f"ID: no dead letter {ident!r} (give an entry id from wincert dead list, or a job id)",
                    ExitCode.USAGE,
                )
            keys = (
                auth.mac_keys(settings.secret_keys.get_secret_value())
                if settings.secret_keys is not None and settings.has_secret_keys
                else None
            )
            plan = dead_letters.plan_replay(client.redis, letter, settings.queue, keys)
            if plan.job is None:
                _fail(f"dead letter {letter.entry_id} cannot be replayed: {plan.reason}", ExitCode.FAILURE)
            job = plan.job
            if not new_id and not plan.same_id:
                _fail(
                    f"dead letter {letter.entry_id} is not replayed under the same job id: {plan.reason}."
                    " Use --new-id to submit a copy under a fresh id anyway",
                    ExitCode.FAILURE,
                )
            if new_id:
                job = dead_letters.with_new_id(job)
                what = (
                    f"submitted a copy of job {letter.job_id} under the new job id {job.job_id}"
                    f" (the old id keeps its {letter.code} result)"
                )
            else:
                what = (
                    f"submitted job {job.job_id} again under the same job id: its stored {letter.code}"
                    " result and delivery counts were cleared, the worker runs it afresh"
                )
            if dry_run:
                typer.echo(f"dry run: would have {what.removeprefix('submitted ')}", err=True)
                return
            if not new_id:
                dead_letters.clear_job_state(client.redis, job.job_id)
            # a replay is a new submission: a fresh submitted_at, or a day-old job is job_too_old
            client.submit(job.model_copy(update={"submitted_at": None}))
            dead_letters.record_replay(client.redis, letter, job.job_id)
            typer.echo(f"{what}; wait for it with: wincert result {job.job_id} --wait", err=True)
            typer.echo(str(job.job_id))

    _run(act, settings)
