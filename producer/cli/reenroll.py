"""``wincert reenroll`` and ``wincert complete`` (on-device key generation and its completion)."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import Annotated

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
from producer.cli.fleet_run import FleetOptions, submit_one_or_fleet
from producer.cli.inputs import _signed_certificate_text
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
    _Connection,
    option_groups,
)
from producer.cli.submitting import _job_fields, _Output
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


@option_groups
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
    store: StoreOptions = StoreOptions(),
    iis: IisBindingOptions = IisBindingOptions(),
    sql: SqlOptions = SqlOptions(),
    allow_takeover: AllowTakeoverOpt = False,
    transport: TransportOptions = TransportOptions(),
    job_id: JobIdOpt = None,
    out: OutputOptions = OutputOptions(),
    fleet: FleetOptions = FleetOptions(),
) -> None:
    """Submit a reenrollment job: the host generates a key pair and returns a CSR (PKCS#10).

    The key stays pending on the host. Sign the CSR and install the certificate with
    `wincert complete`, or give --signer TASK to have the worker chain signing and installation
    (binding with the entry parameters given here). Without --wait, prints the job id (exit 0);
    with --wait, the result, the CSR's subject and (--csr-out) where the CSR was written.
    """
    _check_timeout(out.timeout)
    output = out.format()
    settings = _load_settings()
    conn = _Connection.of(target, store, transport)
    targets = fleet.targets(conn, job_id=job_id)
    binding = _Binding(iis, sql, allow_takeover).entry_parameters

    try:
        if fleet.fleet is not None and csr_out is not None:
            raise UsageProblemError("--csr-out: one file cannot take a fleet's CSRs; read 'csr' from --json")
        address = conn.check("reenroll") if fleet.fleet is None else ("", None)
        entry = binding(store.store_type) if fleet.fleet is None else None
        if subject is None:
            raise UsageProblemError(
                "subject (--subject): missing; give the X.500 subject, e.g. --subject"
                " 'CN=web01.contoso.com, O=\"Contoso, Inc\"'"
            )
        sans = _subject_alt_names(san, legacy_sans)
        if signer_queue is not None and signer is None:
            raise UsageProblemError("signer.queue (--signer-queue): also give --signer TASK")
        if csr_out is not None:
            if not out.wait:
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
    submit_one_or_fleet(
        settings,
        conn,
        address,
        targets,
        fields,
        binding,
        _Output.of(out, output, extras=_ReenrollExtras(csr_out)),  # run_fleet does not use extras
        restart_service=sql.restart_service,
    )


@option_groups
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
    store: StoreOptions = StoreOptions(),
    iis: IisBindingOptions = IisBindingOptions(),
    sql: SqlOptions = SqlOptions(),
    allow_takeover: AllowTakeoverOpt = False,
    include_chain: IncludeChainOpt = False,
    transport: TransportOptions = TransportOptions(),
    job_id: JobIdOpt = None,
    out: OutputOptions = OutputOptions(),
    fleet: FleetOptions = FleetOptions(),
) -> None:
    """Submit a reenrollment completion job: install the signed certificate with its pending key.

    Then binds it (IISU with the entry parameters, WinSQL honouring --restart-service). A
    certificate whose key no pending request holds fails with no_matching_request. Without
    --wait, prints the job id (exit 0); with --wait, the result and the thumbprint installed.
    """
    _check_timeout(out.timeout)
    output = out.format()
    settings = _load_settings()
    conn = _Connection.of(target, store, transport)
    targets = fleet.targets(conn, job_id=job_id)
    binding = _Binding(iis, sql, allow_takeover).entry_parameters

    try:
        address = conn.check("complete") if fleet.fleet is None else ("", None)
        entry = binding(store.store_type) if fleet.fleet is None else None
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
    submit_one_or_fleet(
        settings,
        conn,
        address,
        targets,
        fields,
        binding,
        _Output.of(out, output),
        restart_service=sql.restart_service,
    )
