"""``wincert reenroll`` and ``wincert complete`` (on-device key generation and its completion)."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from cryptography import x509
from rich.console import Console
from rich.text import Text

from producer.cli.base import (
    ExitCode,
    OutputFormat,
    UsageProblemError,
    _check_timeout,
    _console,
    _fail,
    _load_settings,
)
from producer.cli.fleet_run import FleetOpt, GroupOpt, LimitOpt, fleet_targets, run_fleet
from producer.cli.inputs import _signed_certificate_text
from producer.cli.options import (
    AllowTakeoverOpt,
    AuthOpt,
    CredentialOpt,
    FormatOpt,
    HostNameOpt,
    HostOpt,
    IncludeChainOpt,
    InstanceNameOpt,
    IpAddressOpt,
    JeaEndpointOpt,
    JobIdOpt,
    JsonOpt,
    NoCertValidationOpt,
    PasswordStdinOpt,
    PortBindingOpt,
    PortOpt,
    ProtocolOpt,
    QuietOpt,
    RestartServiceOpt,
    SiteNameOpt,
    SniFlagOpt,
    SpnWithPortOpt,
    StorePathOpt,
    StoreTypeOpt,
    TargetArg,
    TimeoutOpt,
    UsernameOpt,
    WaitOpt,
    _Binding,
    _Connection,
)
from producer.cli.render import _output_format
from producer.cli.submitting import _job_fields, _Output, _submit_command
from producer.messages import (
    AnyJob,
    JobResult,
    ReenrollmentJob,
    parse_legacy_sans,
)

_SAN_TYPES = ("dns", "ip", "email", "upn", "uri")


def _subject_alt_names(san: list[str] | None, legacy: str | None) -> list[dict[str, str]]:
    """``--san TYPE:VALUE`` (repeatable) and the legacy ``--sans "dns=a&ip=b"``, in that order."""
    entries: list[dict[str, str]] = []
    for given in san or []:
        kind, sep, value = given.partition(":")
        kind = kind.strip().lower()
        if not sep:
            raise UsageProblemError(
                f"sans (--san): {given!r} is not TYPE:VALUE; e.g. --san dns:www.contoso.com --san ip:10.0.0.1"
            )
        if kind not in _SAN_TYPES:
            raise UsageProblemError(
                f"sans (--san): unknown SAN type {kind!r} in {given!r}; use {', '.join(_SAN_TYPES)}"
            )
        entries.append({"type": kind, "value": value.strip()})
    if legacy is not None:
        try:
            entries.extend(parse_legacy_sans(legacy))
        except ValueError as exc:
            raise UsageProblemError(
                f"sans (--sans): {exc}; e.g. --sans 'dns=www.contoso.com&ip=10.0.0.1'"
            ) from None
    return entries


_COMPLETION_IN_MESSAGE = re.compile(r"completion job ([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})")


def _check_csr_out(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise UsageProblemError(
            f"--csr-out: cannot write {path!r}: "
            + ("it is a directory" if os.path.isdir(path) else f"no directory {folder!r}")
        )


def csr_subject(csr_pem: str) -> str:
    """The subject of a PEM PKCS#10 request (RFC 4514, in the order it was written).

    Raises:
        ValueError: ``csr_pem`` is not a PEM certificate request.
    """
    return x509.load_pem_x509_csr(csr_pem.encode("ascii")).subject.rfc4514_string()


def render_reenrollment(
    console: Console, result: JobResult, csr_out: str | None, *, err_console: Console | None = None
) -> None:
    """After a reenrollment result: write the CSR to ``csr_out`` and show its subject, where it
    went and the completion job chained signing runs (``wincert result ID --wait``).

    Raises:
        OSError: ``csr_out`` could not be written.
    """
    err = err_console or Console(stderr=True, highlight=False, soft_wrap=False)
    if result.csr is not None:
        try:
            console.print(Text(f"CSR subject: {csr_subject(result.csr)}"))
        except ValueError as exc:
            err.print(Text(f"warning: the result's csr is not a PEM certificate request ({exc})"))
        if csr_out is not None:
            with open(csr_out, "w", encoding="ascii", newline="\n") as handle:
                handle.write(result.csr if result.csr.endswith("\n") else result.csr + "\n")
            console.print(Text(f"CSR written to {csr_out}"))
        else:
            console.print(
                Text(f"CSR: give --csr-out FILE, or read 'csr' from `wincert result {result.job_id} --json`")
            )
    elif csr_out is not None:
        err.print(Text(f"warning: the result has no CSR; {csr_out} not written"))
    named = _COMPLETION_IN_MESSAGE.search(result.message)
    if named is not None:
        completion = named.group(1).lower()
        console.print(Text(f"completion job {completion}: wincert result {completion} --wait"))


@dataclass(frozen=True)
class _ReenrollExtras:
    """reenroll's additions to the standard report (see :class:`_Extras`)."""

    csr_out: str | None

    def submitted(self, job: AnyJob) -> tuple[dict[str, str], list[str]]:
        if not isinstance(job, ReenrollmentJob) or job.signer is None:
            return {}, []
        completion = job.completion_job_id
        line = (
            f"completion job {completion} (signed by {job.signer.task}): wincert result {completion} --wait"
        )
        return {"completion_job_id": str(completion)}, [line]

    def finished(self, result: JobResult, fmt: OutputFormat) -> None:
        # json / keyfactor: stdout stays one JSON document; the file is still written
        console = _console() if fmt is OutputFormat.TABLE else Console(file=io.StringIO())
        try:
            render_reenrollment(console, result, self.csr_out)
        except OSError as exc:
            _fail(
                f"--csr-out: cannot write {self.csr_out!r}: {exc.strerror or exc}; the CSR is in"
                f" `wincert result {result.job_id} --json`",
                ExitCode.ERROR,
            )


ProviderNameOpt = Annotated[
    str | None,
    typer.Option(
        "--provider-name",
        help="KSP/CSP the key is generated in (default Microsoft Software Key Storage Provider).",
    ),
]


def reenroll(
    target: TargetArg = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            help="X.500 subject (required), e.g. 'CN=web01.contoso.com, O=\"Contoso, Inc\"'.",
        ),
    ] = None,
    key_algorithm: Annotated[
        str, typer.Option("--key-algorithm", help="RSA (default), ECDSA_P256 or ECDSA_P384.")
    ] = "RSA",
    key_length: Annotated[
        int | None,
        typer.Option("--key-length", help="RSA key size: 2048 (default), 3072 or 4096; not for ECDSA."),
    ] = None,
    provider_name: ProviderNameOpt = None,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            metavar="TYPE:VALUE",
            help="Subject alternative name; repeatable. TYPE: dns, ip, email, upn or uri"
            " (e.g. dns:www.contoso.com, ip:10.0.0.1).",
        ),
    ] = None,
    legacy_sans: Annotated[
        str | None,
        typer.Option(
            "--sans", metavar="'dns=A&ip=B'", help="SANs in the peer's legacy form (with --san: added after)."
        ),
    ] = None,
    signer: Annotated[
        str | None,
        typer.Option(
            "--signer",
            metavar="TASK",
            help="Celery task that signs the CSR; the worker then installs the certificate itself"
            " (the completion job is named in the result).",
        ),
    ] = None,
    signer_queue: Annotated[
        str | None, typer.Option("--signer-queue", metavar="QUEUE", help="The --signer task's queue.")
    ] = None,
    csr_out: Annotated[
        str | None,
        typer.Option("--csr-out", metavar="FILE", help="With --wait: write the CSR (PEM) to FILE."),
    ] = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    site_name: SiteNameOpt = None,
    ip_address: IpAddressOpt = None,
    port_binding: PortBindingOpt = None,
    host_name: HostNameOpt = None,
    sni_flag: SniFlagOpt = None,
    instance_name: InstanceNameOpt = None,
    restart_service: RestartServiceOpt = False,
    allow_takeover: AllowTakeoverOpt = False,
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
    """Submit a reenrollment job: the host generates a key pair and returns a CSR (PKCS#10).

    The key stays pending on the host. Sign the CSR and install the certificate with
    `wincert complete`, or give --signer TASK to have the worker chain signing and installation
    (binding with the entry parameters given here). Without --wait, prints the job id (exit 0);
    with --wait, the result, the CSR's subject and (--csr-out) where the CSR was written.
    """
    _check_timeout(timeout)
    output = _output_format(as_json, fmt)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    targets = fleet_targets(fleet, group, limit, conn, job_id=job_id) if fleet is not None else []

    def binding(kind: str) -> dict[str, Any] | None:
        return _Binding(
            kind, site_name, ip_address, port_binding, host_name, sni_flag, instance_name,
            restart_service, allow_takeover,
        ).entry_parameters()  # fmt: skip

    try:
        if fleet is not None and csr_out is not None:
            raise UsageProblemError("--csr-out: one file cannot take a fleet's CSRs; read 'csr' from --json")
        address = conn.check("reenroll") if fleet is None else ("", None)
        entry = binding(store_type) if fleet is None else None
        if subject is None:
            raise UsageProblemError(
                "subject (--subject): missing; give the X.500 subject, e.g. --subject"
                " 'CN=web01.contoso.com, O=\"Contoso, Inc\"'"
            )
        sans = _subject_alt_names(san, legacy_sans)
        if signer_queue is not None and signer is None:
            raise UsageProblemError("signer.queue (--signer-queue): also give --signer TASK")
        if csr_out is not None:
            if not wait:
                raise UsageProblemError(
                    "--csr-out: the CSR comes with the result; add --wait (or read 'csr' from"
                    " `wincert result ID --json` later)"
                )
            _check_csr_out(csr_out)
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    fields = _job_fields(
        "reenrollment",
        job_id,
        subject=subject,
        key_algorithm=key_algorithm.strip().upper(),
        key_length=key_length,
        provider_name=provider_name,
        sans=sans,
        entry_parameters=entry,
        signer=None if signer is None else {"task": signer, "queue": signer_queue},
        allow_takeover=allow_takeover,
    )
    if fleet is not None:
        run_fleet(
            settings,
            conn,
            targets,
            lambda target: {**fields, "entry_parameters": binding(target.store["store_type"])},
            _Output(wait, timeout, output, quiet=quiet),
            restart_service=restart_service,
        )
    _submit_command(
        settings,
        conn,
        address,
        fields,
        _Output(wait, timeout, output, extras=_ReenrollExtras(csr_out), quiet=quiet),
        restart_service=restart_service,
    )


def complete(
    target: TargetArg = None,
    certificate: Annotated[
        str | None,
        typer.Option(
            "--certificate",
            metavar="FILE",
            help="The issued certificate (required): PEM (its chain may follow) or DER.",
        ),
    ] = None,
    chain: Annotated[
        list[str] | None,
        typer.Option(
            "--chain",
            metavar="FILE",
            help="Issuer certificates, PEM (one or more) or DER; repeatable. Installed with --include-chain.",
        ),
    ] = None,
    request_job_id: Annotated[
        str | None,
        typer.Option(
            "--request-job-id",
            metavar="UUID",
            help="The reenroll job that made the key (a certificate pairing with another is a warning).",
        ),
    ] = None,
    host: HostOpt = None,
    store_path: StorePathOpt = None,
    store_type: StoreTypeOpt = "WinCert",
    site_name: SiteNameOpt = None,
    ip_address: IpAddressOpt = None,
    port_binding: PortBindingOpt = None,
    host_name: HostNameOpt = None,
    sni_flag: SniFlagOpt = None,
    instance_name: InstanceNameOpt = None,
    restart_service: RestartServiceOpt = False,
    allow_takeover: AllowTakeoverOpt = False,
    include_chain: IncludeChainOpt = False,
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
    """Submit a reenrollment completion job: install the signed certificate with its pending key.

    Then binds it (IISU with the entry parameters, WinSQL honouring --restart-service). A
    certificate whose key no pending request holds fails with no_matching_request. Without
    --wait, prints the job id (exit 0); with --wait, the result and the thumbprint installed.
    """
    _check_timeout(timeout)
    output = _output_format(as_json, fmt)
    settings = _load_settings()
    conn = _Connection(
        target, host, store_path, store_type, protocol, port, auth, credential, username,
        password_stdin, no_cert_validation, spn_with_port, jea_endpoint,
    )  # fmt: skip
    targets = fleet_targets(fleet, group, limit, conn, job_id=job_id) if fleet is not None else []

    def binding(kind: str) -> dict[str, Any] | None:
        return _Binding(
            kind, site_name, ip_address, port_binding, host_name, sni_flag, instance_name,
            restart_service, allow_takeover,
        ).entry_parameters()  # fmt: skip

    try:
        address = conn.check("complete") if fleet is None else ("", None)
        entry = binding(store_type) if fleet is None else None
        if certificate is None:
            raise UsageProblemError(
                "certificate (--certificate): missing; give the issued certificate file (PEM or DER)"
            )
        leaf = _signed_certificate_text(certificate, "certificate", "--certificate")
        issuers = [_signed_certificate_text(path, "chain", "--chain") for path in chain or []]
    except UsageProblemError as exc:
        _fail(str(exc), ExitCode.USAGE)
    fields = _job_fields(
        "reenrollment_complete",
        job_id,
        certificate=leaf,
        chain=issuers,
        request_job_id=request_job_id,
        entry_parameters=entry,
        include_chain=include_chain,
        allow_takeover=allow_takeover,
    )
    if fleet is not None:
        run_fleet(
            settings,
            conn,
            targets,
            lambda target: {**fields, "entry_parameters": binding(target.store["store_type"])},
            _Output(wait, timeout, output, quiet=quiet),
            restart_service=restart_service,
        )
    _submit_command(
        settings,
        conn,
        address,
        fields,
        _Output(wait, timeout, output, quiet=quiet),
        restart_service=restart_service,
    )
