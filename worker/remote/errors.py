"""Map exceptions from a remote job to a stable result code and a message that says what to fix.

:func:`classify` takes any exception raised while opening a session or running a function and
returns a :class:`Classified`: the :class:`~producer.codes.ResultCode`, a message naming the
host, port and the thing to check, and a bounded ``kind`` for the
``wincert_remote_errors_total{kind}`` metric.

Messages are built here from known parts (host, port, auth method, credential *name*, fault
code, remote error text); exception text is only quoted after :func:`redact` removed every
secret the caller passed. Passwords never appear.
"""

from __future__ import annotations

import http
import http.client
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError

from producer.codes import ResultCode
from producer.messages import StoreRef

if TYPE_CHECKING:
    from worker.credentials import Credential

STORE_NOT_FOUND_ID = "WinCert.StoreNotFound"
"""FullyQualifiedErrorId prefix of the terminating error for a missing store."""

ERROR_ID_CODES: dict[str, ResultCode] = {
    STORE_NOT_FOUND_ID: ResultCode.STORE_NOT_FOUND,  # classify() words this one itself
    "WinCert.StoreOpenFailed": ResultCode.STORE_OPEN_FAILED,
    "WinCert.UsageCheckFailed": ResultCode.USAGE_CHECK_FAILED,
    "WinCert.ProviderNotFound": ResultCode.PROVIDER_NOT_FOUND,
    "WinCert.PfxImportFailed": ResultCode.PFX_IMPORT_FAILED,
    "WinCert.ImportVerificationFailed": ResultCode.IMPORT_VERIFICATION_FAILED,
    "WinCert.IisNotInstalled": ResultCode.IIS_NOT_INSTALLED,
    "WinCert.SiteNotFound": ResultCode.SITE_NOT_FOUND,
    "WinCert.InvalidSslFlags": ResultCode.INVALID_SSL_FLAGS,
    "WinCert.InvalidHostName": ResultCode.INVALID_HOST_NAME,
    "WinCert.WildcardHostNotSupported": ResultCode.WILDCARD_HOST_NOT_SUPPORTED,
    "WinCert.BindingConflict": ResultCode.BINDING_CONFLICT,
    "WinCert.SslMappingShadowed": ResultCode.SSL_MAPPING_SHADOWED,
    "WinCert.CertificateNotFound": ResultCode.CERTIFICATE_NOT_FOUND,
    "WinCert.SqlInstanceNotFound": ResultCode.SQL_INSTANCE_NOT_FOUND,
    "WinCert.PrivateKeyNotFound": ResultCode.PRIVATE_KEY_NOT_FOUND,
    "WinCert.SqlEccNotSupported": ResultCode.SQL_ECC_NOT_SUPPORTED,
    "WinCert.KeyAclFailed": ResultCode.KEY_ACL_FAILED,
    "WinCert.IisCommitFailed": ResultCode.IIS_COMMIT_FAILED,
    "WinCert.KeyGenerationFailed": ResultCode.KEY_GENERATION_FAILED,
    "WinCert.NoMatchingRequest": ResultCode.NO_MATCHING_REQUEST,
}
"""Terminating error ids of ``worker/powershell/*.ps1`` (docs/powershell-functions.md) → codes.
``tests/contract/test_error_ids.py`` checks that every id the library throws is here."""

_ERROR_ID_HINTS: dict[str, str] = {
    "WinCert.StoreOpenFailed": "the store exists but the account cannot open it; check the account's"
    " rights on {host} (an administrator, or the JEA virtual account)",
    "WinCert.UsageCheckFailed": "nothing was removed; check that the account can read the IIS configuration"
    " and the SQL Server registry keys on {host}",
    "WinCert.IisCommitFailed": "the binding is unchanged; check applicationHost.config on {host} (locked by"
    " another writer, read-only or invalid)",
    "WinCert.NoMatchingRequest": "was it issued for a request of this host (a reenrollment job on {host})"
    " that was not completed yet?",
}
"""What to check, appended to the message of a mapped error id (``{host}``: the client machine)."""

TRANSIENT_CODES = frozenset({ResultCode.HOST_UNREACHABLE, ResultCode.TIMEOUT})
"""Codes worth retrying (``WINCERT_TRANSIENT_RETRIES``)."""

QUOTA_MAX_SHELLS = "2150859173"
"""0x803381A5 ERROR_WSMAN_QUOTA_MAX_SHELLS: the account's MaxShellsPerUser is reached (at Create)."""
QUOTA_MAX_OPERATIONS = "2150859174"
"""0x803381A6 ERROR_WSMAN_QUOTA_MAX_OPERATIONS: MaxConcurrentOperationsPerUser is reached."""
QUOTA_COMMANDS_PER_SHELL = "2150859241"
"""0x803381E9 ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ: the shell's command quota is reached."""
QUOTA_FAULTS = frozenset({QUOTA_MAX_SHELLS, QUOTA_MAX_OPERATIONS, QUOTA_COMMANDS_PER_SHELL})
"""WinRM quota faults: a fresh session (after freeing this worker's idle shells) may succeed."""

_FAULT_HINTS = {
    "2150858752": "the endpoint (resource URI) does not exist; check the JEA endpoint name",
    "2150858811": "the PowerShell session configuration (JEA endpoint) is not registered on the host;"
    " check jea_endpoint (Get-PSSessionConfiguration on the host, deploy/jea/README.md)",
    "2150858843": "the shell was closed by the host (idle timeout or WinRM restart); run the job again",
    "2150858793": "the operation timed out on the host",
    "2150858760": "the request was larger than the host's MaxEnvelopeSizekb",
    "2150858772": "the host's WinRM quota (MaxShellsPerUser / MaxConcurrentOperations) is exhausted;"
    " lower the per-host limit (WINCERT_HOST_LIMITS) or raise the quota",
    QUOTA_MAX_SHELLS: "the host's MaxShellsPerUser quota is reached: this account has that many shells"
    " open (this worker reopened once after closing its idle sessions to the host). Close other"
    " sessions of the account, lower WINCERT_HOST_LIMITS / WINCERT_SESSION_IDLE_SECONDS, or raise"
    " the quota on the host: winrm set winrm/config/winrs '@{MaxShellsPerUser=\"50\"}' and"
    " Set-Item WSMan:\\localhost\\Plugin\\microsoft.powershell\\Quotas\\MaxShellsPerUser 50",
    QUOTA_MAX_OPERATIONS: "the host's MaxConcurrentOperationsPerUser quota is reached (requests in"
    " flight for this account); lower WINCERT_HOST_LIMITS or raise it on the host: winrm set"
    " winrm/config/service '@{MaxConcurrentOperationsPerUser=\"4294967295\"}'",
    QUOTA_COMMANDS_PER_SHELL: "the host's commands-per-shell quota is reached (this worker reopened the"
    " session once); lower WINCERT_SESSION_MAX_COMMANDS below the host's quota, or raise it on the"
    " host: winrm set winrm/config/winrs '@{MaxProcessesPerShell=\"100\"}' (and the plugin's"
    " Quotas\\MaxConcurrentCommandsPerShell)",
}


class RemoteCommandError(Exception):
    """A PowerShell function on the host failed (terminating error or error record).

    Attributes:
        function: the function (or "loading <file>") that failed.
        fq_error: the first error record's FullyQualifiedErrorId (``WinCert.StoreNotFound`` or
            ``WinCert.StoreNotFound,Get-WinCertInventory`` as Windows writes it).
        message: the error record's text (its ToString).
    """

    def __init__(self, function: str, fq_error: str, message: str, error_count: int = 1) -> None:
        super().__init__(f"{function}: {message} [{fq_error or 'no error id'}]")
        self.function = function
        self.fq_error = fq_error
        self.message = message
        self.error_count = error_count

    @property
    def error_id(self) -> str:
        """The error id without the command name Windows appends after a comma."""
        return self.fq_error.split(",", 1)[0].strip()


class TransportFailureError(Exception):
    """A failure its transport already classified (local mode's PowerShell process).

    :func:`classify` returns ``code``, ``message`` (secrets redacted) and ``kind`` as they are.
    """

    def __init__(self, code: ResultCode, message: str, kind: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class Classified:
    """A classified failure: result code, user message, metrics kind."""

    code: ResultCode
    message: str
    kind: str


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret value replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable by cause, context, ``.reason`` or exception args."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        related: list[object] = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        related.extend(current.args)
        stack.extend(item for item in related if isinstance(item, BaseException))


_DROPPED: tuple[type[BaseException], ...] = (
    ConnectionResetError,
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
)
"""A TCP connection that was accepted, then dropped without an HTTP answer."""


def speaks_tls(host: str, port: int, timeout: float = 3.0) -> bool:
    """True if ``host:port`` completes a TLS handshake (certificate not checked, nothing sent
    after it): used only after a plain HTTP request was reset, to tell an HTTPS listener from a
    broken host."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=None if _is_ip(host) else host),
        ):
            return True
    except (OSError, ValueError):
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _http_status(code: object) -> str:
    """``500 Internal Server Error`` for 500 (the code alone if unknown)."""
    try:
        return f"{int(str(code))} {http.HTTPStatus(int(str(code))).phrase}"
    except ValueError:
        return str(code)


def _body_excerpt(text: str, secrets: Iterable[str]) -> str:
    """The start of an HTTP error body as one line: HTML tags dropped, secrets redacted."""
    plain = " ".join(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", text).split())
    return redact(plain, secrets)[:160]


_CREDSSP_REFUSED = frozenset({0x8009030C, 0xC000006D, 0x80090308})
"""SEC_E_LOGON_DENIED, STATUS_LOGON_FAILURE, SEC_E_INVALID_TOKEN: what a CredSSP server puts in
its TSRequest errorCode (MS-CSSP 2.2.1) when the inner NTLM/Kerberos logon fails."""


def _credssp_logon_refused(exc: BaseException) -> bool:
    """requests-credssp's ``NTStatusException`` (or ``AuthenticationException``) for a refused logon."""
    name = type(exc).__name__
    if name == "NTStatusException":
        return bool(exc.args) and exc.args[0] in _CREDSSP_REFUSED
    return name == "AuthenticationException" and type(exc).__module__.startswith("requests_credssp")


def _connect_reason(exc: BaseException) -> str:
    for item in _chain(exc):
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror) or type(item).__name__ == "NameResolutionError":
            return "the host name does not resolve (DNS)"
        if isinstance(item, requests.exceptions.ConnectTimeout | socket.timeout):
            return "connect timeout"
        if isinstance(item, ConnectionResetError):
            return "connection reset by the host"
        if type(item).__name__ in {"RemoteDisconnected", "ProtocolError"}:
            return "the host closed the connection"
        if isinstance(item, OSError) and item.errno is not None and item.strerror:
            return item.strerror.lower()
    return "connection failed"


def classify(
    exc: BaseException,
    store: StoreRef,
    *,
    credential_label: str,
    ca_bundle: Path | None = None,
    read_timeout: int | None = None,
    secrets: Iterable[str] = (),
    credential: Credential | None = None,
) -> Classified:
    """Classify ``exc`` raised while working on ``store``'s host.

    Args:
        exc: the exception.
        store: the job's store (host, port, protocol, auth, store path).
        credential_label: how to name the credential in messages, e.g. ``credential 'winrm-ops'``.
        ca_bundle: the configured CA bundle (named in TLS messages).
        read_timeout: the HTTP read timeout in seconds (named in timeout messages).
        secrets: values to remove from any quoted exception text.
        credential: the resolved credential (Kerberos messages name its principal, keytab or cache).
    """
    secrets = list(secrets)
    host, port = store.client_machine, store.effective_port
    where = f"{host}:{port}"

    if isinstance(exc, TransportFailureError):
        return Classified(exc.code, redact(exc.message, secrets), exc.kind)

    if isinstance(exc, RemoteCommandError):
        detail = redact(exc.message, secrets)
        if exc.error_id == STORE_NOT_FOUND_ID:
            return Classified(
                ResultCode.STORE_NOT_FOUND,
                f"the certificate store '{store.store_path}' does not exist on {host}"
                f" (Cert:\\LocalMachine\\{store.store_path}); check the store path: {detail}",
                "store_not_found",
            )
        known = ERROR_ID_CODES.get(exc.error_id)
        if known is not None:
            hint = _ERROR_ID_HINTS.get(exc.error_id)
            suffix = f" ({hint.format(host=store.host)})" if hint else ""
            return Classified(known, f"{exc.function} on {host}: {detail}{suffix}", known.value)
        return Classified(
            ResultCode.REMOTE_ERROR,
            f"{exc.function} failed on {host}: {detail} (error id {exc.fq_error or 'none'})",
            "remote_error",
        )

    if credential is not None and store.auth.value in ("kerberos", "negotiate"):
        from worker.remote.kerberos import classify_kerberos  # imports this module

        kerberos = classify_kerberos(exc, store, credential)
        if kerberos is not None:
            return Classified(kerberos[0], redact(kerberos[1], secrets), "kerberos")

    auth_failed = (
        isinstance(exc, AuthenticationError)
        or (isinstance(exc, WinRMTransportError) and exc.code == 401)
        or any(_credssp_logon_refused(e) for e in _chain(exc))
    )
    if auth_failed and store.auth.value == "certificate":
        return Classified(
            ResultCode.AUTH_FAILED,
            f"{where} refused the client certificate of {credential_label}: check that the host maps it"
            " (New-Item WSMan:\\localhost\\ClientCertificate -Subject <the certificate's UPN> -Issuer"
            " <its CA's thumbprint> -Credential <local account>), that the CA is in the host's"
            " Trusted Root store, and that the certificate has the Client Authentication EKU and a UPN",
            "auth",
        )
    if auth_failed:
        return Classified(
            ResultCode.AUTH_FAILED,
            f"{where} refused the {credential_label} ({store.auth.value} authentication): check the"
            f" username and password of {credential_label} and that the account may use WinRM"
            " (a member of Administrators or Remote Management Users on the host)",
            "auth",
        )

    if isinstance(exc, requests.exceptions.SSLError) or any(isinstance(e, ssl.SSLError) for e in _chain(exc)):
        bundle = f"WINCERT_CA_BUNDLE={ca_bundle}" if ca_bundle else "WINCERT_CA_BUNDLE (not set: system CAs)"
        reason = next((str(e) for e in _chain(exc) if isinstance(e, ssl.SSLError)), "handshake failed")
        if "WRONG_VERSION_NUMBER" in reason or "wrong version number" in reason.lower():
            return Classified(
                ResultCode.PROTOCOL_MISMATCH,
                f"{where} did not answer TLS ({redact(reason, secrets)[:200]}): it is probably a plain"
                " HTTP listener; use protocol http (port 5985), or the HTTPS listener's port (5986)",
                "protocol",
            )
        return Classified(
            ResultCode.TLS_ERROR,
            f"TLS with {where} failed ({redact(reason, secrets)[:300]}): check that the WinRM HTTPS"
            f" listener's certificate is issued for '{host}' and chains to a CA in {bundle}",
            "tls",
        )

    if (
        store.protocol.value == "http"
        and isinstance(exc, requests.exceptions.ConnectionError)
        and any(isinstance(e, _DROPPED) for e in _chain(exc))
        and speaks_tls(store.host, port)
    ):
        return Classified(
            ResultCode.PROTOCOL_MISMATCH,
            f"{where} reset the plain HTTP request and completes a TLS handshake: it is an HTTPS"
            " listener; use protocol https (port 5986), or the HTTP listener's port (5985)",
            "protocol",
        )

    if isinstance(exc, requests.exceptions.ConnectTimeout) or (
        isinstance(exc, requests.exceptions.ConnectionError)
        and not isinstance(exc, requests.exceptions.ReadTimeout)
    ):
        return Classified(
            ResultCode.HOST_UNREACHABLE,
            f"cannot reach WinRM at {where} over {store.protocol.value} ({_connect_reason(exc)}): check"
            f" the host name, port {port} and that the WinRM listener (winrm quickconfig) and the"
            " firewall allow it",
            "connect",
        )

    if isinstance(exc, requests.exceptions.ReadTimeout | socket.timeout | TimeoutError):
        limit = f" within {read_timeout} s (WINCERT_READ_TIMEOUT)" if read_timeout else ""
        return Classified(
            ResultCode.TIMEOUT,
            f"{where} accepted the connection but did not answer{limit}; check the host's load and"
            " its WinRM service, or raise WINCERT_READ_TIMEOUT",
            "timeout",
        )

    transport = next((e for e in _chain(exc) if isinstance(e, WinRMTransportError)), None)
    if isinstance(exc, WSManFaultError) and exc.code is None and not exc.reason and transport is not None:
        exc = transport  # an HTTP error whose body parsed as XML but holds no WS-Management fault

    if isinstance(exc, WSManFaultError):
        code = str(exc.code or "unknown")
        reason = redact(str(exc.reason or ""), secrets).strip()
        hint = _FAULT_HINTS.get(code, "see the WinRM event log on the host")
        if store.jea_endpoint is not None and code in ("2150858752", "2150858811"):
            hint = (
                f"JEA endpoint {store.jea_endpoint!r} is not registered on the host; check the store's"
                " jea_endpoint against Get-PSSessionConfiguration there (setup: deploy/jea/README.md)"
            )
        return Classified(
            ResultCode.WINRM_FAULT,
            f"WinRM on {where} answered with WS-Management fault {code}"
            f"{': ' + reason[:300] if reason else ''}; {hint}",
            "winrm_fault",
        )

    if isinstance(exc, WinRMTransportError):
        status = _http_status(exc.code)
        body = _body_excerpt(str(exc.response_text or ""), secrets)
        return Classified(
            ResultCode.WINRM_FAULT,
            f"WinRM on {where} answered HTTP {status} without a WS-Management fault"
            f"{f' (body: {body!r})' if body else ''}; check that port {port} is the WinRM listener"
            " (winrm enumerate winrm/config/listener) and not a proxy or another web server, and the"
            " WinRM event log on the host",
            "winrm_fault",
        )

    if isinstance(exc, WinRMError):
        return Classified(
            ResultCode.REMOTE_ERROR,
            f"PowerShell Remoting with {where} failed: {type(exc).__name__}:"
            f" {redact(str(exc), secrets)[:300]}",
            "remote_error",
        )

    return Classified(
        ResultCode.REMOTE_ERROR,
        f"working with {where} failed: {type(exc).__name__}: {redact(str(exc), secrets)[:300]}",
        "other",
    )
