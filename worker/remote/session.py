"""Open a PowerShell Remoting session (pypsrp WSMan + RunspacePool) to a job's host.

:func:`open_session` is the production :data:`SessionFactory`: it builds the WSMan transport
from the job's :class:`~producer.messages.StoreRef` and the worker's settings, opens a
single-runspace pool (``configuration_name`` = the JEA endpoint, if any), yields a
:class:`PsrpSession`, and closes the pool in ``finally``. The session defines the library
functions a call needs in the same pipeline as its first call (:mod:`worker.remote.library`:
only those functions, compressed, expanded on the host by a fixed bootstrap script); JEA
endpoints refuse scripts and have the functions installed as a module, so nothing is sent there.

Local mode (``store.is_local``: ``HOST|LocalMachine``, ``localhost``, ``localmachine``) does not
use WinRM: :func:`open_local_session` starts ``WINCERT_LOCAL_POWERSHELL`` and speaks
out-of-process PSRP with it (:mod:`worker.remote.local`); :func:`make_session_factory` chooses.

WinRM sessions are pooled per worker process (:mod:`worker.remote.pool`) when
``SessionOptions.session_idle_seconds`` > 0 (``WINCERT_SESSION_IDLE_SECONDS``, default 60): a
job checks an open session out exclusively and gives it back, so the NTLM handshake, the shell
``Create`` and the library load happen once per (host, port, protocol, auth, user, credential,
TLS validation, JEA endpoint) instead of once per job. 0 opens and closes a session per job.

The factory is injectable: :func:`worker.jobs.run` takes any callable with the
:data:`SessionFactory` shape, so tests plug in without touching jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr
from pypsrp.complex_objects import PSInvocationState, RunspacePoolState
from pypsrp.powershell import DEFAULT_CONFIGURATION_NAME, RunspacePool
from pypsrp.shell import SignalCode
from pypsrp.wsman import SelectorSet, WSMan

from producer.codes import ResultCode
from producer.messages import AuthMethod, StoreRef
from producer.messages import Protocol as WinRMProtocol
from worker.credentials import Credential, CredentialError
from worker.remote.errors import RemoteCommandError, TransportFailureError
from worker.remote.invoke import Invocation, Prelude, run_function, skip_private_data
from worker.remote.kerberos import uses_kerberos, wsman_kerberos_kwargs
from worker.remote.library import BOOTSTRAP_PARAMETER, bootstrap_script, library, library_scripts
from worker.remote.local import NOT_CONFIGURED, SETTING, LocalSession
from worker.remote.ntlm import send_negotiate_first, skip_lm_hash
from worker.remote.pool import DEFAULT_MAX_SIZE, SessionKey, SessionPool
from worker.remote.session_memory import default_store_roots, session_kib, trusted_roots
from worker.remote.shared_wrappers import share_pool_wrappers
from worker.remote.ssh import SshSession, ssh_session_kwargs
from worker.remote.tls_context import share_tls_context

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
    session_idle_seconds: float = 60
    """Seconds an idle WinRM session stays open for reuse (keep below Windows' ~120 s
    keep-alive drop); 0: no pool, one session per job (``WINCERT_SESSION_IDLE_SECONDS``)."""
    session_max_age_seconds: float = 600
    """Seconds after opening when a pooled session is closed instead of reused
    (``WINCERT_SESSION_MAX_AGE_SECONDS``)."""
    session_pool_size: int = DEFAULT_MAX_SIZE
    """Idle sessions one worker process keeps at most (all hosts); the least recently used is closed."""
    session_pool_memory_kib: float | None = None
    """Private memory idle sessions may hold together in one process (KiB, each counted at
    :func:`worker.remote.session_memory.session_kib`: HTTPS costs more); None: count only."""
    session_max_commands: int = 100
    """Calls after which a pooled session is recycled (``WINCERT_SESSION_MAX_COMMANDS``; 0: no limit)."""
    ssh_known_hosts: Path | None = None
    """protocol ssh: the known_hosts file host keys are checked against (``WINCERT_SSH_KNOWN_HOSTS``)."""
    ssh_trust_on_first_use: bool = False
    """protocol ssh: pin unknown host keys (``WINCERT_SSH_TRUST_ON_FIRST_USE``)."""
    ssh_subsystem: str = "powershell"
    """protocol ssh: the sshd subsystem serving PSRP (``WINCERT_SSH_SUBSYSTEM``)."""


def wsman_kwargs(store: StoreRef, credential: Credential, options: SessionOptions) -> dict[str, Any]:
    """Keyword arguments for :class:`pypsrp.wsman.WSMan` (the password included: never log this).

    * ``cert_validation``: the CA bundle path, or True (system CAs); False only when the job
      sets ``cert_validation: false``.
    * Kerberos (auth negotiate or kerberos): the SPN ``HTTP/<host>`` (``spn_service``,
      ``spn_hostname``, ``spn_with_port`` → ``HTTP/<host>:<port>`` as Windows'
      ``IncludePortInSPN``) and the client credential (password, keytab or credential cache):
      :func:`worker.remote.kerberos.wsman_kerberos_kwargs`.
    """
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
    if uses_kerberos(store):
        kwargs.update(wsman_kerberos_kwargs(store, credential))
    if store.auth is AuthMethod.CERTIFICATE:
        kwargs.update(certificate_kwargs(credential))
    return kwargs


def certificate_kwargs(credential: Credential) -> dict[str, Any]:
    """pypsrp's client-certificate arguments from the credential's ``certificate_file`` and
    ``private_key_file`` (PEM paths on the worker; the key may be encrypted: its passphrase is
    ``private_key_passphrase``, handed to the TLS library, never written anywhere).

    Raises:
        CredentialError: the credential has no client certificate, or a file is missing.
    """
    material = credential.material
    if material is None or material.certificate_file is None or material.private_key_file is None:
        raise CredentialError(
            f"auth 'certificate' needs a client certificate, but {credential.label} has none; give it"
            " 'certificate_file' and 'private_key_file' (PEM, the key preferably encrypted with"
            " 'private_key_passphrase') in WINCERT_CREDENTIALS_FILE"
        )
    for path in (material.certificate_file, material.private_key_file):
        if not path.is_file():
            raise CredentialError(f"{credential.label}: {path} does not exist or is not a file")
    passphrase = material.private_key_passphrase
    return {
        "username": None,
        "password": None,
        "certificate_pem": str(material.certificate_file),
        "certificate_key_pem": str(material.private_key_file),
        "certificate_key_password": passphrase.get_secret_value() if passphrase is not None else None,
    }


class PsrpSession:
    """An open runspace pool (``wsman``: its transport).

    ``send_library``: define missing library functions in the pipeline of the call that needs
    them (False on JEA endpoints, where the module is installed). ``loaded``: lower-case names of
    the library functions defined in the pool so far.
    """

    def __init__(self, pool: RunspacePool, wsman: WSMan | None = None, send_library: bool = True) -> None:
        self.pool = pool
        self.wsman = wsman
        self.send_library = send_library
        self.loaded: set[str] = set()
        self.fresh_transport: Callable[[], WSMan] | None = None
        """Opens a new transport to the same host as the same user (set by :func:`connect`)."""
        self.interrupted = False
        """A call was cut off (soft time limit, transport error): the transport's state is
        unknown, so :meth:`close` stops the shell through a fresh connection."""

    def invoke(self, function: str, parameters: Mapping[str, Any]) -> Invocation:
        """Run one library function (see :func:`worker.remote.invoke.run_function`), preceded in
        the same pipeline by the bootstrap defining what it needs and the pool lacks.

        Raises:
            RemoteCommandError: the function (or the bootstrap) failed.
        """
        bundle = library().bundle_for(function, self.loaded) if self.send_library else None
        try:
            if bundle is None:
                return run_function(self.pool, function, parameters)
            prelude = Prelude(bootstrap_script(), {BOOTSTRAP_PARAMETER: bundle.blob})
            invocation = run_function(self.pool, function, parameters, prelude)
        except RemoteCommandError as exc:
            if bundle is not None and exc.fq_error.startswith("WinCert."):  # the bootstrap did its job
                self.loaded.update(bundle.units)
            raise
        except BaseException:  # SoftTimeLimitExceeded mid-request, a dropped connection, ...
            self.interrupted = True
            raise
        self.loaded.update(bundle.units)
        return invocation

    def close(self) -> None:
        """Close the runspace pool (WS-Man ``Delete``) and the transport; best effort, never raises.

        After an interrupted call (:attr:`interrupted`), or when the ``Delete`` fails, the running
        pipelines are stopped (WS-Man ``Signal`` terminate) and the shell deleted through a fresh
        connection: a request cut off by the soft time limit leaves an encrypted HTTP session
        unable to send anything (pypsrp re-authenticates on a new connection but encrypts with
        the old context: HTTP 400), and the command would keep running on the host and its shell
        count against ``MaxShellsPerUser`` until the idle timeout.
        """
        if self.pool.state == RunspacePoolState.BEFORE_OPEN:  # never reached the host: nothing to delete
            self._close_transport()
            return
        if not self.interrupted:
            try:
                self.pool.close()
                self._close_transport()
                return
            except Exception:  # closing a broken pool must not hide the job's own error
                log.debug("closing the runspace pool failed; retrying on a fresh connection", exc_info=True)
        self._stop_via_fresh_connection()
        self._close_transport()

    def _stop_via_fresh_connection(self) -> None:
        if self.fresh_transport is None or self.pool.state not in (
            RunspacePoolState.OPENED,
            RunspacePoolState.BROKEN,
        ):
            return
        shell = self.pool.shell
        fresh: WSMan | None = None
        try:
            fresh = self.fresh_transport()
            shell.wsman = fresh
            for pipeline_id, pipeline in list(self.pool.pipelines.items()):
                if pipeline.state in (PSInvocationState.RUNNING, PSInvocationState.STOPPING):
                    try:
                        shell.signal(SignalCode.TERMINATE, str(pipeline_id).upper())
                    except Exception:  # already finished on the host: the Delete below still runs
                        log.debug("signalling a pipeline to stop failed", exc_info=True)
            shell.close()
            log.info("stopped the interrupted session's pipelines, deleted its shell (fresh connection)")
        except Exception:
            log.warning(
                "could not delete the interrupted session's shell; it stays open on the host until its"
                " idle timeout (IdleTimeout) and counts against MaxShellsPerUser",
                exc_info=True,
            )
        finally:
            self.pool.state = RunspacePoolState.CLOSED
            if fresh is not None:
                try:
                    fresh.close()
                except Exception:
                    log.debug("closing the fresh WSMan transport failed", exc_info=True)

    def close_orphan(self, orphan: object) -> None:
        """Close ``orphan`` (a broken session to the same host as the same user) through this
        session's connection; best effort, never raises.

        A session whose encrypted keep-alive connection was dropped cannot send its own
        ``Delete`` (pypsrp re-authenticates but encrypts with the old context: HTTP 400), so its
        shell would stay open on the host until the shell's idle timeout (2 h by default on
        Windows) and count against ``MaxShellsPerUser``. The host accepts the ``Delete`` for that
        ShellId from any connection of the same user.
        """
        if not isinstance(orphan, PsrpSession):
            return
        shell_id = orphan.pool.id
        if orphan.pool.state in (RunspacePoolState.OPENED, RunspacePoolState.BROKEN) and self.wsman:
            try:
                selectors = SelectorSet()
                selectors.add_option("ShellId", shell_id)
                self.wsman.delete(orphan.pool.shell.resource_uri, selector_set=selectors)
            except Exception:  # e.g. shell not found: the host already forgot it
                log.debug("deleting an orphaned shell failed", exc_info=True)
            orphan.pool.state = RunspacePoolState.CLOSED
        orphan._close_transport()

    def _close_transport(self) -> None:
        if self.wsman is not None:
            try:
                self.wsman.close()
            except Exception:
                log.debug("closing the WSMan transport failed", exc_info=True)


def connect(
    store: StoreRef,
    credential: Credential,
    options: SessionOptions,
    on_open: Callable[[StoreRef], None] | None = None,
) -> PsrpSession | SshSession:
    """Open a session to ``store``'s host (WinRM: the library follows with the first call; SSH:
    :func:`connect_ssh`).

    The caller closes it (:meth:`PsrpSession.close`); on failure it is closed here.
    ``on_open`` is called once the runspace pool is open (``wincert_sessions_opened_total``).

    Raises whatever pypsrp/requests raise; :func:`worker.remote.errors.classify` maps it.
    """
    if store.protocol is WinRMProtocol.SSH:
        return connect_ssh(store, credential, options, on_open)
    kwargs = wsman_kwargs(store, credential, options)
    wsman = _wsman(kwargs)
    pool = RunspacePool(wsman, configuration_name=_configuration_name(store))
    skip_private_data(pool)
    session = PsrpSession(pool, wsman, send_library=store.jea_endpoint is None)
    session.fresh_transport = lambda: _wsman(kwargs)
    try:
        session.pool.open()
        if on_open is not None:
            on_open(store)
    except BaseException:
        session.close()
        raise
    return session


def _wsman(kwargs: dict[str, Any]) -> WSMan:
    """A pypsrp ``WSMan`` whose requests session skips the per-request environment lookups.

    pypsrp builds its ``requests.Session`` with ``trust_env = True`` and resolves the proxy and
    CA-bundle environment once, at build time (we pass ``no_proxy=True``); requests would then
    repeat those lookups (``getproxies_environment`` over ``os.environ``) on every request: ~6 ms
    of worker CPU per cold job, 17% of it (``make bench``, cProfile). Turning ``trust_env`` off
    after the build keeps the build-time settings and drops the repeats. Private pypsrp API
    (``WSMan.transport._build_session``, pypsrp 0.9.1), used only here.

    Its adapters use the process's shared connection-pool wrappers
    (:func:`worker.remote.shared_wrappers.share_pool_wrappers`: ~4.5 KiB less per idle session),
    and an HTTPS session's connections the process's TLS context for its CA bundle (or the
    non-verifying one) when it sends no client certificate
    (:func:`worker.remote.tls_context.share_tls_context`).

    ``auth: ntlm``: the session's auth gets the NT hash instead of the password
    (:func:`worker.remote.ntlm.skip_lm_hash`: no LM hash computed per NTLM context).
    """
    wsman = WSMan(**kwargs)
    transport: Any = wsman.transport
    build = transport._build_session

    def build_without_env_lookups() -> Any:
        session = build()
        session.trust_env = False
        share_pool_wrappers(session)
        if transport.ssl:  # an HTTP session never loads a trust store: none to share
            share_tls_context(session)
        skip_lm_hash(session.auth)
        send_negotiate_first(session.auth)
        return session

    transport._build_session = build_without_env_lookups
    return wsman


def connect_ssh(
    store: StoreRef,
    credential: Credential,
    options: SessionOptions,
    on_open: Callable[[StoreRef], None] | None = None,
) -> SshSession:
    """Open a runspace pool over SSH (``protocol: ssh``) and load the function library.

    Raises:
        TransportFailureError: connect, host key, key authentication or subsystem failures.
        RemoteCommandError: loading the library failed.
    """
    session = SshSession(store, credential, **ssh_session_kwargs(options))
    session.start()
    try:
        if on_open is not None:
            on_open(store)
        for name, text in library_scripts():
            session.load_script(name, text)
    except BaseException:
        session.close()
        raise
    return session


@contextmanager
def open_session(
    store: StoreRef,
    credential: Credential,
    options: SessionOptions,
    on_open: Callable[[StoreRef], None] | None = None,
) -> Iterator[PsrpSession | SshSession]:
    """Open a session to ``store``'s host, load the library, yield it, close it in ``finally``.

    Raises whatever pypsrp/requests raise; :func:`worker.remote.errors.classify` maps it.
    """
    session = connect(store, credential, options, on_open)
    try:
        yield session
    finally:
        session.close()


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


class WorkerSessionFactory:
    """The production :data:`SessionFactory`: local, pooled WinRM, or one WinRM session per job.

    Local stores (``store.is_local``) get a local session (never pooled) and ignore
    ``credential``. Other stores are checked out of :attr:`pool` when
    ``options.session_idle_seconds`` > 0, else opened and closed per job.
    ``on_open(store)`` is called for every session really opened, ``on_reuse(store)`` for every
    pooled session reused (metrics).
    """

    def __init__(
        self,
        options: SessionOptions,
        on_open: Callable[[StoreRef], None] | None = None,
        on_reuse: Callable[[StoreRef], None] | None = None,
    ) -> None:
        self.options = options
        self._on_open = on_open
        self.pool: SessionPool | None = None
        if options.session_idle_seconds > 0:
            self.pool = SessionPool(
                self._connect,
                idle_seconds=options.session_idle_seconds,
                max_age_seconds=options.session_max_age_seconds,
                max_size=options.session_pool_size,
                ca_bundle=str(options.ca_bundle) if options.ca_bundle is not None else None,
                on_reuse=on_reuse,
                max_commands=options.session_max_commands,
                max_kib=options.session_pool_memory_kib,
                kib_of=_kib_of(options.ca_bundle),
            )

    def _connect(self, store: StoreRef, credential: Credential) -> PsrpSession | SshSession:
        return connect(store, credential, self.options, self._on_open)

    def __call__(self, store: StoreRef, credential: Credential) -> AbstractContextManager[RemoteSession]:
        """A context manager holding a session for ``store`` (see the class docstring)."""
        if store.is_local:
            return open_local_session(store, self.options, self._on_open)
        if self.pool is None:
            return open_session(store, credential, self.options, self._on_open)
        return self.pool.checkout(store, credential)

    def close(self) -> None:
        """Close the pool's idle sessions (best effort; nothing to do without a pool)."""
        if self.pool is not None:
            self.pool.close()


def make_session_factory(
    options: SessionOptions,
    on_open: Callable[[StoreRef], None] | None = None,
    on_reuse: Callable[[StoreRef], None] | None = None,
) -> WorkerSessionFactory:
    """The production :data:`SessionFactory` bound to ``options`` (and metrics hooks).

    See :class:`WorkerSessionFactory`: local stores get a local session; WinRM sessions are
    pooled when ``options.session_idle_seconds`` > 0.
    """
    return WorkerSessionFactory(options, on_open, on_reuse)


def _kib_of(ca_bundle: Path | None) -> Callable[[SessionKey], float]:
    """KiB an idle session of a key holds (:func:`~worker.remote.session_memory.session_kib`):
    HTTPS sessions use the process's shared TLS context for the worker's trust bundle (or the
    non-verifying one) unless they authenticate with a client certificate; then their own,
    loaded with the bundle (or, not validating, the system's default store)
    (:mod:`worker.remote.tls_context`)."""
    roots = trusted_roots(ca_bundle)

    def kib_of(key: SessionKey) -> float:
        if key.auth != AuthMethod.CERTIFICATE.value:
            return session_kib(key.protocol, roots, shared_context=True)
        return session_kib(key.protocol, roots if key.cert_validation else default_store_roots())

    return kib_of
