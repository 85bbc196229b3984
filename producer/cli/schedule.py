"""``wincert schedule``: periodic inventories of every store of a fleet file (:mod:`producer.schedule`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated

import typer

from producer.cli.base import ExitCode, _fail, _load_settings, _run
from producer.cli.fleet_run import GroupOpt, LimitOpt, select_fleet
from producer.client import Client
from producer.schedule import Event, Scheduler

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``1.5h``, ``1d`` -> seconds.

    Raises:
        ValueError: not a positive duration.
    """
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"--every: {text!r} is not a duration; give e.g. 90, 30s, 15m, 1h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def schedule(
    fleet: Annotated[
        str, typer.Option("--fleet", metavar="FILE", help="The fleet file whose stores are inventoried.")
    ],
    every: Annotated[
        str, typer.Option("--every", metavar="DURATION", help="Interval: 90, 30s, 15m, 1h, 1d.")
    ] = "1h",
    group: GroupOpt = None,
    limit: LimitOpt = None,
    cycles: Annotated[
        int | None,
        typer.Option("--cycles", min=1, help="Stop after N intervals (default: run until Ctrl-C)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per event.")] = False,
) -> None:
    """Inventory every store of a fleet file every DURATION, spread over the interval.

    Each store has a fixed place in the interval (from a hash of host and store), so runs are
    spread evenly and keep their slot across restarts. A store whose previous run has not
    finished is skipped, never run twice at once (a Redis key per store; several schedulers can
    share a fleet). Prints one line per event: submitted, skipped, finished.
    """
    try:
        interval = parse_duration(every)
    except ValueError as exc:
        _fail(str(exc), ExitCode.USAGE)
    targets = select_fleet(fleet, group, limit)
    if not targets:
        _fail(f"--fleet: no store of {fleet} matches", ExitCode.USAGE)
    settings = _load_settings()

    def emit(event: Event) -> None:
        what, target, detail = event
        now = datetime.now(UTC).isoformat(timespec="seconds")
        store = target.store
        if as_json:
            line = json.dumps(
                {
                    "at": now,
                    "event": what,
                    "host": target.host,
                    "store_type": store["store_type"],
                    "store_path": store["store_path"],
                    "detail": detail,
                }
            )
        else:
            line = "\t".join((now, what, target.host, store["store_type"], store["store_path"], detail))
        typer.echo(line)

    with Client(settings) as client:
        scheduler = Scheduler(client, targets, interval)
        typer.echo(
            f"scheduling {len(targets)} stores every {interval:g} s (one every"
            f" {interval / len(targets):.2f} s on average)",
            err=True,
        )
        _run(lambda: scheduler.run(emit, cycles), settings)
