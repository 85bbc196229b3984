"""Validate, seal, submit and report one job: the body every job command shares."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import typer
from pydantic import ValidationError
from rich.console import Console

from producer.cli.base import (
    ExitCode,
    OutputFormat,
    _fail,
    _fail_validation,
    _print_json,
    _read_password,
    _run,
    live_progress,
)
from producer.cli.options import OutputOptions, _Connection
from producer.cli.render import _exit_for, _print_result
from producer.client import (
    Client,
    PlaintextSecretRefusedError,
    ResultTimeoutError,
    endpoint,
)
from producer.messages import (
    AddJob,
    AnyJob,
    InventoryJob,
    JobResult,
    ReenrollmentCompleteJob,
    ReenrollmentJob,
    RemoveJob,
    parse_job,
)
from producer.progress import Phase, job_progress
from producer.secrets import SecretKeyError
from producer.settings import ENV_PREFIX, ProducerSettings


class _Extras(Protocol):
    """What a command adds to the standard report of :func:`_send` (reenroll: CSR, completion job)."""

    def submitted(self, job: AnyJob) -> tuple[dict[str, str], list[str]]:
        """Extra JSON fields and extra text lines for the job-id report (without ``--wait``)."""
        ...

    def finished(self, result: JobResult, fmt: OutputFormat) -> None:
        """Called after the result was printed, before the exit code is chosen."""
        ...


@dataclass(frozen=True)
class _Output:
    wait: bool
    timeout: float
    fmt: OutputFormat
    job_history_id: int | None = None
    extras: _Extras | None = None
    quiet: bool = False
    """``-q``: print the job id alone (with ``--wait``: then only the exit code tells the status)."""

    @classmethod
    def of(
        cls,
        options: OutputOptions,
        fmt: OutputFormat | None = None,
        *,
        job_history_id: int | None = None,
        extras: _Extras | None = None,
    ) -> _Output:
        """From the output options; ``fmt``: the format already read from them (else read here,
        exiting 2 when ``--json`` and ``--format`` disagree)."""
        return cls(
            options.wait,
            options.timeout,
            fmt if fmt is not None else options.format(),
            job_history_id,
            extras,
            options.quiet,
        )


@dataclass(frozen=True)
class _Sealed:
    """Job fields holding secrets other than the WinRM password (the Add job's certificate).

    ``placeholder`` stands in for them while the rest of the job is validated, before anything
    is read from stdin; ``seal`` reads and encrypts the real values.
    """

    placeholder: dict[str, Any]
    seal: Callable[[Client], dict[str, Any]]
    field: str
    option: str


_NO_KEYS = (
    f"{ENV_PREFIX}SECRET_KEYS is not set (make a key with `wincert keygen` and give the workers the"
    f" same keys), and {ENV_PREFIX}ALLOW_PLAINTEXT_SECRETS is off (development only)"
)


def _describe(job: AnyJob) -> str:
    s = job.store
    where = f"{s.store_type.value} {s.store_path!r} on {endpoint(s)}"
    if isinstance(job, AddJob):
        return f"add to {where}"
    if isinstance(job, RemoveJob):
        return f"remove of {job.alias} from {where}"
    if isinstance(job, ReenrollmentJob):
        return f"reenrollment ({job.subject}) for {where}"
    if isinstance(job, ReenrollmentCompleteJob):
        request = f" of request {job.request_job_id}" if job.request_job_id else ""
        return f"reenrollment completion{request} for {where}"
    if isinstance(job, InventoryJob):
        return f"inventory of {where}"
    return f"{job.job_type} for {where}"


def _submit_command(
    settings: ProducerSettings,
    conn: _Connection,
    address: tuple[str, int | None],
    fields: dict[str, Any],
    out: _Output,
    *,
    restart_service: bool = False,
    sealed: _Sealed | None = None,
) -> None:
    """Validate, seal, submit and report one job (the body of inventory, add and remove).

    The job is validated with placeholders for its secrets first, so a bad option is reported
    before any password is read; then the secrets are read and encrypted and the real job is
    validated again (:meth:`Client.prepare`) and sent.
    """
    store = conn.store(*address, restart_service=restart_service)
    try:
        parse_job({**fields, "store": store, **(sealed.placeholder if sealed else {})})
    except ValidationError as exc:
        _fail_validation(exc)
    if not settings.has_secret_keys and not settings.allow_plaintext_secrets:
        if conn.username is not None:
            _fail(
                f"store.credential (--password-stdin): cannot send an inline password: {_NO_KEYS}; or use"
                " --credential NAME",
                ExitCode.USAGE,
            )
        if sealed is not None:
            _fail(f"{sealed.field} ({sealed.option}): cannot send it: {_NO_KEYS}", ExitCode.USAGE)

    client = Client(settings)
    try:
        if conn.username is not None:
            password = _read_password()
            if not password:
                _fail(
                    "store.credential (--password-stdin): the password read from stdin is empty",
                    ExitCode.USAGE,
                )
            try:
                store["credential"] = client.inline_credential(conn.username, password)
            except ValidationError as exc:
                _fail_validation(exc, prefix="store.credential")
            except (PlaintextSecretRefusedError, SecretKeyError) as exc:
                _fail(f"store.credential: {exc}", ExitCode.USAGE)
        job: dict[str, Any] = {**fields, "store": store}
        if sealed is not None:
            try:
                job.update(sealed.seal(client))
            except (PlaintextSecretRefusedError, SecretKeyError, ValueError) as exc:
                _fail(f"{sealed.field} ({sealed.option}): {exc}", ExitCode.USAGE)
        try:
            prepared = client.prepare(job)
        except ValidationError as exc:
            _fail_validation(exc)
        except PlaintextSecretRefusedError as exc:
            _fail(str(exc), ExitCode.USAGE)
        _send(client, settings, prepared, out)
    finally:
        client.close()


def _send(client: Client, settings: ProducerSettings, prepared: AnyJob, out: _Output) -> None:
    """Submit a prepared job and report it (job id, or the result with ``--wait``)."""

    def submit_and_show() -> None:
        submitted = client.submit(prepared)
        if out.quiet:
            typer.echo(str(submitted))
            if not out.wait:
                return
            found = wait_for_result(client, submitted, out.timeout, live=False)
            if out.extras is not None:
                out.extras.finished(found, OutputFormat.JSON)  # files only, nothing printed
            _exit_for(found)
        if not out.wait:
            fields, lines = out.extras.submitted(prepared) if out.extras else ({}, [])
            if out.fmt is not OutputFormat.TABLE:
                submitted_at = prepared.submitted_at
                _print_json(
                    {
                        "job_id": str(submitted),
                        "queue": settings.queue,
                        "submitted_at": submitted_at.isoformat() if submitted_at else None,
                        **fields,
                    }
                )
            else:
                # stdout: the job id alone (`id=$(wincert inventory ...)`); the sentence on stderr
                typer.echo(str(submitted))
                typer.echo(
                    f"submitted job {submitted} ({_describe(prepared)}) to queue {settings.queue}", err=True
                )
                typer.echo(f"result: wincert result {submitted} --wait", err=True)
                for line in lines:
                    typer.echo(line)
            return
        found = wait_for_result(client, submitted, out.timeout)
        _print_result(found, out.fmt, out.job_history_id)
        if out.extras is not None:
            out.extras.finished(found, out.fmt)
        _exit_for(found)

    _run(submit_and_show, settings)


def wait_for_result(
    client: Client, job_id: uuid.UUID, timeout: float, *, live: bool | None = None
) -> JobResult:
    """Wait up to ``timeout`` seconds for the job's result (:meth:`Client.wait`).

    ``live`` (default: when stdout and stderr are terminals, :func:`live_progress`) shows the
    job's state on stderr while waiting — queued, waiting for a host slot, running, retrying,
    with the attempt number (:mod:`producer.progress`) — and erases it when the result comes.

    Raises:
        ResultTimeoutError: no result within ``timeout``; and what :meth:`Client.wait` raises.
    """
    if not (live_progress() if live is None else live):
        return client.wait(job_id, timeout)
    deadline = time.monotonic() + timeout
    console = Console(stderr=True, highlight=False)
    with console.status("queued") as status:
        while (remaining := deadline - time.monotonic()) > 0:
            progress = job_progress(client.redis, job_id)  # one round trip per poll
            if progress.phase is Phase.FINISHED:
                break
            status.update(progress.describe())
            time.sleep(min(_POLL_SECONDS, remaining))
    try:
        return client.wait(job_id, max(deadline - time.monotonic(), _POLL_SECONDS))
    except ResultTimeoutError:
        raise ResultTimeoutError(job_id, timeout) from None


_POLL_SECONDS = 0.3


def _job_fields(job_type: str, job_id: str | None, **fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"job_type": job_type, **fields}
    if job_id is not None:
        job["job_id"] = job_id
    return job
