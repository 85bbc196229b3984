"""``wincert add`` and ``wincert remove`` (Management jobs)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from producer.cli.base import (
    ExitCode,
    UsageProblemError,
    _check_timeout,
    _fail,
    _load_settings,
    _read_password,
)
from producer.cli.fleet_run import FleetOptions, submit_one_or_fleet
from producer.cli.inputs import _read_certificate_file, _read_secret_file, check_certificate_input
from producer.cli.options import (
    AllowTakeoverOpt,
    IisBindingOptions,
    IncludeChainOpt,
    JobIdOpt,
    OutputOptions,
    SqlOptions,
    StoreOptions,
    TargetArg,
    TransportOptions,
    _Binding,
    _check_applicable,
    _Connection,
    _entry_parameters,
    _instance_names,
    option_groups,
)
from producer.cli.submitting import _job_fields, _Output, _Sealed
from producer.client import (
    Client,
)

CheckOpt = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Check mode (WinCert, IISU, WinSQL): report what the job would change on the host and change"
        " nothing (result code ok: it would change; already_present/already_absent: it would not).",
    ),
]


@option_groups
def add(
    target: TargetArg = None,
    certificate: Annotated[
        str | None,
        typer.Option(
            "--certificate",
            metavar="FILE",
            help="The certificate file: PKCS#12 (.pfx/.p12), DER, PEM or PKCS#7 (required). Sent"
            " encrypted with WINCERT_SECRET_KEYS.",
        ),
    ] = None,
    pfx_password_stdin: Annotated[
        bool,
        typer.Option(
            "--pfx-password-stdin", help="Read the PKCS#12 password from stdin (prompts on a terminal)."
        ),
    ] = False,
    pfx_password_file: Annotated[
        str | None,
        typer.Option(
            "--pfx-password-file",
            metavar="FILE",
            help="Read the PKCS#12 password from FILE (one trailing newline is dropped).",
        ),
    ] = None,
    pfx_no_password: Annotated[
        bool,
        typer.Option("--pfx-no-password", help="The file has no password (the default)."),
    ] = False,
    pfx_empty_password: Annotated[
        bool,
        typer.Option(
            "--pfx-empty-password",
            help="The PKCS#12 password is the empty string (Windows treats it differently from no password).",
        ),
    ] = False,
    store: StoreOptions = StoreOptions(),
    iis: IisBindingOptions = IisBindingOptions(),
    provider_name: Annotated[
        str | None, typer.Option("--provider-name", help="CSP/KSP to import the private key into.")
    ] = None,
    sql: SqlOptions = SqlOptions(),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the certificate if it is already in the store.")
    ] = False,
    include_chain: IncludeChainOpt = False,
    exportable: Annotated[
        bool, typer.Option("--exportable", help="Import the private key as exportable.")
    ] = False,
    rewrap_legacy_pfx: Annotated[
        bool,
        typer.Option(
            "--rewrap-legacy-pfx",
            help="Re-wrap PBES2/AES PKCS#12 files with 3DES/SHA1 for hosts older than Server 2019.",
        ),
    ] = False,
    allow_takeover: AllowTakeoverOpt = False,
    renewal_thumbprint: Annotated[
        str | None,
        typer.Option(
            "--renewal-thumbprint",
            help="The certificate this one renews (IISU/WinSQL rebind from it; IISU deletes it when unused).",
        ),
    ] = None,
    transport: TransportOptions = TransportOptions(),
    job_id: JobIdOpt = None,
    out: OutputOptions = OutputOptions(),
    fleet: FleetOptions = FleetOptions(),
    check: CheckOpt = False,
) -> None:
    """Submit a Management Add job: import a certificate into a store (and bind it for IISU/WinSQL).

    PKCS#12 password: none by default (--pfx-no-password says so explicitly); --pfx-password-stdin
    or --pfx-password-file FILE to give one; --pfx-empty-password for the empty password. Only one
    secret can come from stdin: with --password-stdin (the WinRM password) give the PKCS#12
    password with --pfx-password-file. The certificate and passwords are encrypted with
    WINCERT_SECRET_KEYS before they are sent.

    Without --wait, prints the job id (exit 0); with --wait, the result and the thumbprint added.
    """
    _check_timeout(out.timeout)
    settings = _load_settings()
    conn = _Connection.of(target, store, transport)
    targets = fleet.targets(conn, job_id=job_id)
    try:
        address = conn.check("add") if fleet.fleet is None else ("", None)
        modes = [
            option
            for option, given in (
                ("--pfx-password-stdin", pfx_password_stdin),
                ("--pfx-password-file", pfx_password_file is not None),
                ("--pfx-no-password", pfx_no_password),
                ("--pfx-empty-password", pfx_empty_password),
            )
            if given
        ]
        if len(modes) > 1:
            raise UsageProblemError(
                f"certificate.password: give at most one of {', '.join(modes)}; without any the file"
                " is sent with no password"
            )
        if pfx_password_stdin and transport.password_stdin:
            raise UsageProblemError(
                "certificate.password (--pfx-password-stdin): stdin already carries the WinRM password"
                " (--password-stdin); give the PKCS#12 password with --pfx-password-file FILE, or the"
                " WinRM credential with --credential NAME"
            )
        binding = _Binding(iis, sql, allow_takeover, provider_name).entry_parameters
        entry = binding(store.store_type) if fleet.fleet is None else None
        if certificate is None:
            raise UsageProblemError(
                "certificate (--certificate): missing; give the certificate file (.pfx, .p12, .cer,"
                " .pem, .p7b)"
            )
        contents = _read_certificate_file(certificate)
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)

    def seal(client: Client) -> dict[str, Any]:
        password: str | None = None
        if pfx_empty_password:
            password = ""
        elif pfx_password_stdin or pfx_password_file is not None:
            try:
                if pfx_password_file is not None:
                    password = _read_secret_file(pfx_password_file, "--pfx-password-file")
                else:
                    password = _read_password("PKCS#12 password: ")
            except UsageProblemError as exc:
                _fail(str(exc), ExitCode.USAGE)
            if not password:
                source = "--pfx-password-file" if pfx_password_file is not None else "--pfx-password-stdin"
                _fail(
                    f"certificate.password ({source}): the password read is empty; if the file's"
                    " password really is the empty string, give --pfx-empty-password instead",
                    ExitCode.USAGE,
                )
        sealed = client.certificate_data(contents, password)
        try:
            check_certificate_input(contents, password, certificate)
        except UsageProblemError as exc:
            _fail(str(exc), ExitCode.USAGE)
        return {"certificate": sealed}

    fields = _job_fields(
        "add",
        job_id,
        entry_parameters=entry,
        overwrite=overwrite,
        include_chain=include_chain,
        exportable=exportable,
        rewrap_legacy_pfx=rewrap_legacy_pfx,
        allow_takeover=allow_takeover,
        renewal_thumbprint=renewal_thumbprint,
        **({"check": True} if check else {}),
    )
    placeholder = {"certificate": {"contents_plaintext": "-"}}
    submit_one_or_fleet(
        settings,
        conn,
        address,
        targets,
        fields,
        binding,
        _Output.of(out),
        restart_service=sql.restart_service,
        sealed=_Sealed(placeholder, seal, "certificate", "--certificate"),
    )


@option_groups
def remove(
    target: TargetArg = None,
    alias: Annotated[
        str | None,
        typer.Option(
            "--alias",
            help="What to remove (required): WinCert/WinSQL the thumbprint; IISU"
            " THUMBPRINT:SiteName:IP:Port:HostName as inventory shows it.",
        ),
    ] = None,
    store: StoreOptions = StoreOptions(),
    sql: SqlOptions = SqlOptions(),
    transport: TransportOptions = TransportOptions(),
    job_id: JobIdOpt = None,
    out: OutputOptions = OutputOptions(),
    fleet: FleetOptions = FleetOptions(),
    check: CheckOpt = False,
) -> None:
    """Submit a Management Remove job: unbind (IISU, WinSQL) and delete a certificate.

    Removing a certificate that is not there succeeds (already_absent). Without --wait, prints
    the job id (exit 0); with --wait, the result and the thumbprint removed.
    """
    _check_timeout(out.timeout)
    settings = _load_settings()
    conn = _Connection.of(target, store, transport)
    targets = fleet.targets(conn, job_id=job_id)

    def instances(kind: str) -> dict[str, Any] | None:
        return _entry_parameters(kind, {"--instance-name": _instance_names(sql.instance_name)})

    try:
        address = conn.check("remove") if fleet.fleet is None else ("", None)
        entry = instances(store.store_type) if fleet.fleet is None else None
        if fleet.fleet is None:
            _check_applicable(store.store_type, {"--restart-service": sql.restart_service})
        if alias is None:
            raise UsageProblemError(
                "alias (--alias): missing; give the certificate's thumbprint (IISU: its alias"
                " THUMBPRINT:SiteName:IP:Port:HostName from inventory)"
            )
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    fields = _job_fields(
        "remove", job_id, alias=alias, entry_parameters=entry, **({"check": True} if check else {})
    )
    submit_one_or_fleet(
        settings,
        conn,
        address,
        targets,
        fields,
        instances,
        _Output.of(out),
        restart_service=sql.restart_service,
    )
