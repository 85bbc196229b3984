"""Open a PowerShell Remoting session (pypsrp WSMan + RunspacePool) to a job's host.

:func:`open_session` is the production :data:`SessionFactory`: it builds the WSMan transport
from the job's :class:`~producer.messages.StoreRef` and the worker's settings, opens a
single-runspace pool (``configuration_name`` = the JEA endpoint, if any), sends the function
library once (skipped for JEA endpoints, which refuse scripts and must have the functions
installed as a module), yields a :class:`PsrpSession`, and closes the pool in ``finally``.

Local mode (``store.is_local``: ``HOST|LocalMachine``, ``localhost``, ``localmachine``) does not
use WinRM: :func:`open_local_session` starts ``WINCERT_LOCAL_POWERSHELL`` and speaks
out-of-process PSRP with it (:mod:`worker.remote.local`); :func:`make_session_factory` chooses.

The factory is injectable: :func:`worker.jobs.run` takes any callable with the
:data:`SessionFactory` shape, so tests and future pooled sessions plug in without touching jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr
from pypsrp.complex_objects import RunspacePoolState
from pypsrp.powershell import DEFAULT_CONFIGURATION_NAME, RunspacePool
from pypsrp.wsman import WSMan

from producer.codes import ResultCode
from producer.messages import AuthMethod, StoreRef
from producer.messages import Protocol as WinRMProtocol
from worker.credentials import Credential, CredentialError
from worker.remote.errors import TransportFailureError
from worker.remote.invoke import Invocation, load_script, run_function
from worker.remote.library import library_scripts
from worker.remote.local import NOT_CONFIGURED, SETTING, LocalSession

log = logging.getLogger(__name__)


class RemoteSession(Protocol):
    """What a job sees of a session: call one PowerShell function with named parameters."""

    def invoke(self, function: str, parameters: Mapping[str, Any]) -> Invocation:
        """Run ``function``; raise :class:`~worker.remote.errors.RemoteCommandError` on errors."""
        ...


SessionFactory = Callable[[StoreRef, Credential], AbstractContextManager[RemoteSession]]
"""``factory(store, credential)`` → a context manager yielding an open :class:`RemoteSession`."""

LOCAL_CREDENTIAL = Credential("the worker's own account (local mode)", "", SecretStr(""))
"""What :func:`worker.jobs.run` passes for local jobs: the PowerShell process runs as the worker."""


@dataclass(frozen=True)
class SessionOptions:
    """Worker-wide connection settings (from :class:`~worker.settings.WorkerSettings`)."""

    ca_bundle: Path | None = None
    connection_timeout: int = 30
    read_timeout: int = 30
    operation_timeout: int = 20
    local_powershell: tuple[str, ...] | None = None
    """Local mode's command (``WINCERT_LOCAL_POWERSHELL`` split); None: local mode unavailable."""
    call_timeout: float = 600
    """Local mode: seconds one function call may run (the worker passes its soft time limit)."""


def wsman_kwargs(store: StoreRef, credential: Credential, options: SessionOptions) -> dict[str, Any]:
    """Keyword arguments for :class:`pypsrp.wsman.WSMan` (the password included: never log this).

    * ``cert_validation``: the CA bundle path, or True (system CAs); False only when the job
      sets ``cert_validation: false``.
    * ``spn_with_port``: Kerberos SPN ``HTTP/<host>:<port>`` as Windows' ``IncludePortInSPN``
      builds it; pypsrp builds the SPN as ``<negotiate_service>/<negotiate_hostname_override>``
      (``pypsrp/negotiate.py`` → ``spnego.client(hostname=..., service=...)``).
    """
    if store.auth is AuthMethod.CERTIFICATE:
        raise CredentialError(
            "auth 'certificate' needs a client certificate, which this worker version cannot"
            " configure; use negotiate, kerberos, ntlm, credssp or basic (over https)"
        )
    if store.auth is AuthMethod.BASIC and store.protocol is WinRMProtocol.HTTP:
        raise CredentialError(
            "auth 'basic' over http would send the password unencrypted and WinRM refuses it by"
            " default; use protocol https, or negotiate/ntlm/kerberos over http"
        )
    cert_validation: bool | str = True
    if not store.cert_validation:
        cert_validation = False
    elif options.ca_bundle is not None:
        cert_validation = str(options.ca_bundle)
    kwargs: dict[str, Any] = {
        "server": store.client_machine,
        "port": store.effective_port,
        "ssl": store.protocol is WinRMProtocol.HTTPS,
        "path": "wsman",
        "auth": store.auth.value,
        "username": credential.username,
        "password": credential.password.get_secret_value(),
        "cert_validation": cert_validation,
        "connection_timeout": options.connection_timeout,
        "read_timeout": options.read_timeout,
        "operation_timeout": options.operation_timeout,
        "no_proxy": True,
    }
    if store.spn_with_port and store.auth in {AuthMethod.NEGOTIATE, AuthMethod.KERBEROS}:
        kwargs["negotiate_service"] = "HTTP"
        kwargs["negotiate_hostname_override"] = f"{store.client_machine}:{store.effective_port}"
    return kwargs


class PsrpSession:
    """An open runspace pool with the function library loaded."""

    def __init__(self, pool: RunspacePool) -> None:
        self.pool = pool

    def invoke(self, function: str, parameters: Mapping[str, Any]) -> Invocation:
        """Run one library function (see :func:`worker.remote.invoke.run_function`)."""
        return run_function(self.pool, function, parameters)


@contextmanager
def open_session(
    store: StoreRef,
    credential: Credential,
    options: SessionOptions,
    on_open: Callable[[StoreRef], None] | None = None,
) -> Iterator[PsrpSession]:
    """Open a session to ``store``'s host, load the library, yield it, close it in ``finally``.

    Raises whatever pypsrp/requests raise; :func:`worker.remote.errors.classify` maps it.
    """
    wsman = WSMan(**wsman_kwargs(store, credential, options))
    pool = RunspacePool(wsman, configuration_name=_configuration_name(store))
    try:
        pool.open()
        if on_open is not None:
            on_open(store)
        if store.jea_endpoint is None:
            for name, text in library_scripts():
                load_script(pool, name, text)
        yield PsrpSession(pool)
    finally:
        try:
            if pool.state != RunspacePoolState.BEFORE_OPEN:  # never reached the host: nothing to delete
                pool.close()
        except Exception:  # closing a broken pool must not hide the job's own error
            log.debug("closing the runspace pool failed", exc_info=True)
        try:
            wsman.close()
        except Exception:
            log.debug("closing the WSMan transport failed", exc_info=True)


def _configuration_name(store: StoreRef) -> str:
    # pypsrp builds the resource URI http://schemas.microsoft.com/powershell/<name> itself
    return store.jea_endpoint if store.jea_endpoint is not None else str(DEFAULT_CONFIGURATION_NAME)


@contextmanager
def open_local_session(
    store: StoreRef,
    options: SessionOptions,
    on_open: Callable[[StoreRef], None] | None = None,
) -> Iterator[LocalSession]:
    """Start the local PowerShell, open its pool, load the library, yield, stop it in ``finally``.

    The process start and pool opening are bounded by ``connection_timeout``, every ack by
    ``read_timeout``, every call by ``call_timeout``.

    Raises:
        TransportFailureError: not configured (``host_unreachable``), cannot start, died, timed out.
        RemoteCommandError: loading the library failed.
    """
    if not options.local_powershell:
        raise TransportFailureError(
            ResultCode.HOST_UNREACHABLE,
            f"{NOT_CONFIGURED}: client machine {store.client_machine!r} runs on the worker's own"
            f" machine through a local PowerShell process; set {SETTING} (e.g. 'pwsh -NoLogo"
            " -NoProfile -s'), or send the job to a Windows worker",
            "connect",
        )
    session = LocalSession(
        options.local_powershell,
        store.client_machine,
        connection_timeout=options.connection_timeout,
        read_timeout=options.read_timeout,
        call_timeout=options.call_timeout,
    )
    session.start()
    try:
        if on_open is not None:
            on_open(store)
        for name, text in library_scripts():
            session.load_script(name, text)
        yield session
    finally:
        session.close()


def make_session_factory(
    options: SessionOptions, on_open: Callable[[StoreRef], None] | None = None
) -> SessionFactory:
    """The production :data:`SessionFactory` bound to ``options`` (and an ``on_open`` hook for metrics).

    Local stores (``store.is_local``) get a local session and ignore ``credential``; every other
    store a WinRM session.
    """

    def factory(store: StoreRef, credential: Credential) -> AbstractContextManager[RemoteSession]:
        if store.is_local:
            return open_local_session(store, options, on_open)
        return open_session(store, credential, options, on_open)

    return factory
