"""``wincert inventory``."""

from __future__ import annotations

from producer.cli.base import ExitCode, UsageProblemError, _check_timeout, _fail, _load_settings
from producer.cli.fleet_run import FleetOptions, run_fleet
from producer.cli.options import (
    JobIdOpt,
    OutputOptions,
    StoreOptions,
    TargetArg,
    TransportOptions,
    _Connection,
    option_groups,
)
from producer.cli.submitting import _job_fields, _Output, _submit_command


@option_groups
def inventory(
    target: TargetArg = None,
    store: StoreOptions = StoreOptions(),
    transport: TransportOptions = TransportOptions(),
    job_id: JobIdOpt = None,
    out: OutputOptions = OutputOptions(),
    fleet: FleetOptions = FleetOptions(),
) -> None:
    """Submit an inventory job: list every certificate in a store on a Windows host.

    Without --wait, prints the job id (exit 0); with --wait, prints the result: a status line
    and a table of certificates (full thumbprints), or the JobResult JSON with --json.
    """
    _check_timeout(out.timeout)
    settings = _load_settings()
    conn = _Connection.of(target, store, transport)
    if fleet.fleet is not None:
        targets = fleet.targets(conn, job_id=job_id)
        run_fleet(settings, conn, targets, lambda _target: _job_fields("inventory", None), _Output.of(out))
    try:
        address = conn.check("inventory")
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    _submit_command(settings, conn, address, _job_fields("inventory", job_id), _Output.of(out))
