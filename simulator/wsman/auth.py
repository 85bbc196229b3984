"""HTTP authentication for one simulated host: Negotiate (NTLM or Kerberos), Kerberos, CredSSP, Basic.

* :class:`CredentialStore` — a host's local accounts. It writes pyspnego's ``NTLM_USER_FILE``
  (smbpasswd ``DOMAIN\\USER:UID:LM:NT:[U]:LCT-0`` lines with the LM and NT hashes, mode 0600)
  under the state dir: pyspnego reads the file at every acceptor step and would otherwise derive
  both hashes from a Heimdal ``DOMAIN:USER:PASSWORD`` line each time (pure-Python DES and MD4, a
  few ms per handshake), as Windows keeps the hashes, not the password. pyspnego matches the
  domain exactly as the client sent it, so each account without an explicit domain gets a bare
  line, a ``HOSTNAME`` line and a ``.`` line (pitfall 11).
* :class:`ConnectionAuth` — the auth state of ONE TCP connection (HTTP.sys semantics, pitfall 2):
  the security context lives as long as the keep-alive socket, and the WinRM encryption
  (MS-WSMV 2.2.9.1) uses it.

``NTLM_USER_FILE`` is a process-wide variable read by pyspnego when an acceptor is created and
when it checks the AUTHENTICATE message. Many hosts share one process, so every acceptor step
runs under one lock with the variable pointing at that host's file. Kerberos works the same
way: MIT Kerberos reads the acceptor keytab from ``KRB5_KTNAME`` when the acceptor credential
is acquired, so a host with ``kerberos_keytab`` sets it under the same lock (the keytab holds
the host's ``HTTP/<name>`` and ``HTTP/<name>:<port>`` keys, as ``setspn`` registers them).

Kerberos as Windows serves it (MS-WSMV 2.2.9.1, MS-KILE): ``WWW-Authenticate: Negotiate``
(SPNEGO, or a raw Kerberos AP-REQ in the Negotiate header) and, when ``kerberos`` is listed,
``WWW-Authenticate: Kerberos``; message encryption uses the Kerberos session key either way
(``HTTP-SPNEGO-session-encrypted`` / ``HTTP-Kerberos-session-encrypted`` framing).

CredSSP (MS-CSSP) with ``credssp`` in ``HostConfig.auth``: ``WWW-Authenticate: CredSSP``;
pyspnego's CredSSP acceptor runs the TLS handshake (its own throw-away certificate), the inner
Negotiate (NTLM from the host's accounts, or Kerberos with a keytab), the public-key binding and
receives the delegated credential (``ConnectionAuth.delegated``); messages are encrypted with
the CredSSP TLS channel (``HTTP-CredSSP-session-encrypted``, 16 KiB parts).

Windows behaviour reproduced: the challenge is ``401`` + ``WWW-Authenticate: Negotiate`` (and
``Basic realm="WSMAN"`` on HTTPS); a failed handshake or wrong Basic password is a ``401``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spnego
from spnego.channel_bindings import GssChannelBindings

from simulator.config import UserSpec
from simulator.wsman.certauth import MUTUAL

log = logging.getLogger(__name__)

_NTLM_ENV_LOCK = threading.Lock()
_KRB5_OIDS = (
    bytes.fromhex("06092a864886f712010202"),  # 1.2.840.113554.1.2.2 Kerberos 5
    bytes.fromhex("06092a864882f712010202"),  # 1.2.840.48018.1.2.2 MS Kerberos 5
)


def is_raw_kerberos(token: bytes) -> bool:
    """Whether ``token`` is a bare GSS-API Kerberos InitialContextToken (RFC 2743 3.1, RFC 4121
    4.1), not SPNEGO-wrapped: what pypsrp sends for ``auth=kerberos`` in a Negotiate header."""
    return token[:1] == b"\x60" and any(oid in token[:16] for oid in _KRB5_OIDS)


@contextlib.contextmanager
def _ntlm_user_file(path: Path, keytab: Path | None = None) -> Iterator[None]:
    values = {"NTLM_USER_FILE": str(path)}
    if keytab is not None:
        values["KRB5_KTNAME"] = f"FILE:{keytab}"
    with _NTLM_ENV_LOCK:
        previous = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@functools.lru_cache(maxsize=256)
def ntlm_hashes(password: str) -> tuple[str, str]:
    """``(LM, NT)`` one-way functions of ``password`` (MS-NLMP 3.3.1 LMOWFv1 / NTOWFv1), 32 upper-case
    hex digits each, computed once per password with pyspnego's own functions (the same values
    it derives from a password line; the only use of its private ``_ntlm_raw`` in the simulator)."""
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

    return lmowfv1(password).hex().upper(), ntowfv1(password).hex().upper()


class CredentialStore:
    """The local accounts of one host, for Basic checks and the NTLM acceptor."""

    def __init__(
        self, host_name: str, users: list[UserSpec], directory: Path, keytab: Path | None = None
    ) -> None:
        self.host_name = host_name
        self.keytab = keytab
        self._users = list(users)
        directory.mkdir(parents=True, exist_ok=True)
        self.ntlm_file = directory / "ntlm_users"
        lines: list[str] = []
        for user in self._users:
            domains = [user.domain] if user.domain else ["", host_name, "."]
            lm, nt = ntlm_hashes(user.password)
            names = [f"{domain}\\{user.username}" if domain else user.username for domain in domains]
            lines += [f"{name}:1000:{lm}:{nt}:[U]:LCT-00000000" for name in names]
        fd = os.open(self.ntlm_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def check_basic(self, raw_user: str, password: str) -> str | None:
        """The canonical ``HOST\\user`` for a valid Basic login, else None."""
        domain, _, name = raw_user.rpartition("\\")
        for user in self._users:
            allowed = {user.domain.upper()} if user.domain else {"", self.host_name.upper(), "."}
            if (
                name.upper() == user.username.upper()
                and domain.upper() in allowed
                and password == user.password
            ):
                return f"{user.domain or self.host_name}\\{user.username}"
        return None

    def step(self, context: Any, token: bytes) -> bytes | None:
        """One acceptor step with this host's credential file in effect."""
        with _ntlm_user_file(self.ntlm_file, self.keytab):
            return context.step(token)  # type: ignore[no-any-return]

    def new_acceptor(self, channel_binding: bytes | None, protocol: str = "negotiate") -> Any:
        """A fresh acceptor: ``negotiate`` accepts SPNEGO (NTLM, or Kerberos with a keytab) and raw
        NTLM tokens; ``kerberos`` accepts raw Kerberos (GSS-API krb5) tokens only."""
        cbt = GssChannelBindings(application_data=channel_binding) if channel_binding else None
        with _ntlm_user_file(self.ntlm_file, self.keytab):
            return spnego.server(protocol=protocol, channel_bindings=cbt)


@dataclass
class AuthOutcome:
    """Result of checking one request's Authorization header.

    ``status``: ``ok`` (authenticated; process the body), ``continue`` (send 401 with
    ``token``), ``handshake-done`` (context completed on this leg; ``token`` may hold a final
    SPNEGO token), ``denied`` (401 without a token).
    """

    status: str
    token: bytes | None = None


class ConnectionAuth:
    """Auth state of one TCP connection.

    Args:
        store: the host's accounts.
        methods: allowed schemes from ``HostConfig.auth`` (``negotiate``, ``ntlm``, ``basic``).
        https: whether this is a TLS listener (Basic is only offered over TLS).
        channel_binding: RFC 5929 ``tls-server-end-point:<hash>`` application data, or None.
    """

    def __init__(
        self, store: CredentialStore, methods: list[str], https: bool, channel_binding: bytes | None
    ):
        self.store = store
        self.methods = set(methods)
        self.https = https
        self.channel_binding = channel_binding
        self.context: Any = None
        self.user: str | None = None
        self.scheme = "Negotiate"
        self.certificate_user: Callable[[], str | None] | None = None
        """HTTPS with a client certificate: maps the presented certificate to an account."""
        self.delegated: Any = None
        """CredSSP: the credential the client delegated (``TSPasswordCreds``: domain, user, password)."""
        """The scheme of the completed handshake (``Negotiate`` or ``Kerberos``): final tokens
        go back under the same name."""

    @property
    def encrypted_session(self) -> bool:
        """Whether a completed Negotiate/NTLM context can wrap messages on this connection."""
        return self.context is not None and self.context.complete

    def challenge_headers(self, allow_basic: bool) -> list[str]:
        """``WWW-Authenticate`` values for a fresh 401."""
        values = []
        if self.methods & {"negotiate", "ntlm"}:
            values.append("Negotiate")
        if "kerberos" in self.methods and self.store.keytab is not None:
            values.append("Kerberos")
        if "credssp" in self.methods:
            values.append("CredSSP")
        if "basic" in self.methods and allow_basic:
            values.append('Basic realm="WSMAN"')
        return values

    def check(self, header: str | None, allow_basic: bool) -> AuthOutcome:
        """Process one request's ``Authorization`` header (None = rely on the connection)."""
        if not header:
            if self.user is not None:
                return AuthOutcome("ok")
            return AuthOutcome("denied")
        if header.strip().lower() == MUTUAL and "certificate" in self.methods and self.https:
            user = self.certificate_user() if self.certificate_user is not None else None
            if user is None:
                return AuthOutcome("denied")
            self.user = user
            return AuthOutcome("ok")
        scheme, _, value = header.partition(" ")
        scheme_l = scheme.lower()
        if scheme_l == "basic" and "basic" in self.methods and allow_basic:
            return self._basic(value.strip())
        if scheme_l in ("negotiate", "ntlm") and self.methods & {"negotiate", "ntlm"}:
            return self._negotiate(value.strip(), scheme)
        if scheme_l == "kerberos" and "kerberos" in self.methods and self.store.keytab is not None:
            return self._negotiate(value.strip(), scheme)
        if scheme_l == "credssp" and "credssp" in self.methods:
            return self._negotiate(value.strip(), scheme)
        return AuthOutcome("denied")

    def _basic(self, value: str) -> AuthOutcome:
        try:
            raw = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return AuthOutcome("denied")
        name, _, password = raw.partition(":")
        user = self.store.check_basic(name, password)
        if user is None:
            log.info("basic auth refused for user=%s", name)
            return AuthOutcome("denied")
        self.user = user
        return AuthOutcome("ok")

    def _negotiate(self, value: str, scheme: str) -> AuthOutcome:
        try:
            token = base64.b64decode(value, validate=True)
        except ValueError:
            return AuthOutcome("denied")
        kerberos = scheme.lower() == "kerberos" or is_raw_kerberos(token)
        if kerberos and self.store.keytab is None and scheme.lower() != "credssp":
            log.info("kerberos auth refused: the host has no keytab (no SPN registered)")
            return AuthOutcome("denied")
        if self.context is None or self.context.complete:
            # A new handshake on this connection replaces any previous context.
            protocol = "credssp" if scheme.lower() == "credssp" else "kerberos" if kerberos else "negotiate"
            self.context, self.user = self.store.new_acceptor(self.channel_binding, protocol), None
            self.scheme = scheme
        try:
            out = self.store.step(self.context, token)
        except Exception as exc:  # pyspnego raises SpnegoError subclasses and ValueError
            log.info("%s auth refused: %s: %s", scheme, type(exc).__name__, exc)
            self.context = None
            return AuthOutcome("denied")
        if not self.context.complete:
            return AuthOutcome("continue", out)
        self.user = self._account(str(self.context.client_principal or ""))
        if scheme.lower() == "credssp":  # Windows logs the user on with the delegated credential
            self.delegated = getattr(self.context, "client_credential", None)
        log.info("%s auth complete user=%s", scheme, self.user)
        return AuthOutcome("handshake-done", out)

    def _account(self, principal: str) -> str:
        """``DOMAIN\\user`` for an NTLM name or a Kerberos ``user@REALM`` (the realm's first
        label as the NetBIOS domain, as Active Directory names it)."""
        if "\\" in principal:
            return principal
        user, at, realm = principal.partition("@")
        if at:
            return f"{realm.split('.')[0].upper()}\\{user}"
        return f"{self.store.host_name}\\{principal}"
