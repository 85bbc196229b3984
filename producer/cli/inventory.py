"""``wincert inventory``."""

from __future__ import annotations

from producer.cli.base import ExitCode, UsageProblemError, _check_timeout, _fail, _load_settings
from producer.cli.fleet_run import FleetOpt, GroupOpt, LimitOpt, fleet_targets, run_fleet
from producer.cli.options import (
    AuthOpt,
    CredentialOpt,
    FormatOpt,
    HostOpt,
    JeaEndpointOpt,
    JobIdOpt,
    JsonOpt,
    NoCertValidationOpt,
    PasswordStdinOpt,
    PortOpt,
    ProtocolOpt,
    QuietOpt,
    SpnWithPortOpt,
    StorePathOpt,
    StoreTypeOpt,
    TargetArg,
    TimeoutOpt,
    UsernameOpt,
    WaitOpt,
    _Connection,
)
from producer.cli.render import _output_format
from producer.cli.submitting import _job_fields, _Output, _submit_command


def inventory(
    target: TargetArg = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    protocol: ProtocolOpt = "https",
    port: PortOpt = None,
    auth: AuthOpt = "negotiate",
    credential: CredentialOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    no_cert_validation: NoCertValidationOpt = False,
    spn_with_port: SpnWithPortOpt = False,
    jea_endpoint: JeaEndpointOpt = None,
    job_id: JobIdOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
    quiet: QuietOpt = False,
    fleet: FleetOpt = None,
    group: GroupOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Submit an inventory job: list every certificate in a store on a Windows host.

    Without --wait, prints the job id (exit 0); with --wait, prints the result: a status line
    and a table of certificates (full thumbprints), or the JobResult JSON with --json.
    """
    _check_timeout(timeout)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    if fleet is not None:
        targets = fleet_targets(fleet, group, limit, conn, job_id=job_id)
        out = _Output(wait, timeout, _output_format(as_json, fmt), quiet=quiet)
        run_fleet(settings, conn, targets, lambda _target: _job_fields("inventory", None), out)
    try:
        address = conn.check("inventory")
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    _submit_command(
        settings,
        conn,
        address,
        _job_fields("inventory", job_id),
        _Output(wait, timeout, _output_format(as_json, fmt), quiet=quiet),
    )
