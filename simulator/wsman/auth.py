"""HTTP authentication for one simulated host: Negotiate/NTLM (pyspnego acceptor) and Basic.

* :class:`CredentialStore` — a host's local accounts. It writes pyspnego's ``NTLM_USER_FILE``
  (Heimdal ``DOMAIN:USER:PASSWORD`` lines, mode 0600) under the state dir. pyspnego matches the
  domain exactly as the client sent it, so each account without an explicit domain gets a bare
  line, a ``HOSTNAME`` line and a ``.`` line (pitfall 11).
* :class:`ConnectionAuth` — the auth state of ONE TCP connection (HTTP.sys semantics, pitfall 2):
  the security context lives as long as the keep-alive socket, and the WinRM encryption
  (MS-WSMV 2.2.9.1) uses it.

``NTLM_USER_FILE`` is a process-wide variable read by pyspnego when an acceptor is created and
when it checks the AUTHENTICATE message. Many hosts share one process, so every acceptor step
runs under one lock with the variable pointing at that host's file.

Windows behaviour reproduced: the challenge is ``401`` + ``WWW-Authenticate: Negotiate`` (and
``Basic realm="WSMAN"`` on HTTPS); a failed handshake or wrong Basic password is a ``401``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spnego
from spnego.channel_bindings import GssChannelBindings

from simulator.config import UserSpec

log = logging.getLogger(__name__)

_NTLM_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _ntlm_user_file(path: Path) -> Iterator[None]:
    with _NTLM_ENV_LOCK:
        previous = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = str(path)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = previous


class CredentialStore:
    """The local accounts of one host, for Basic checks and the NTLM acceptor."""

    def __init__(self, host_name: str, users: list[UserSpec], directory: Path) -> None:
        self.host_name = host_name
        self._users = list(users)
        directory.mkdir(parents=True, exist_ok=True)
        self.ntlm_file = directory / "ntlm_users"
        lines: list[str] = []
        for user in self._users:
            domains = [user.domain] if user.domain else ["", host_name, "."]
            lines += [f"{domain}:{user.username}:{user.password}" for domain in domains]
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
        with _ntlm_user_file(self.ntlm_file):
            return context.step(token)  # type: ignore[no-any-return]

    def new_acceptor(self, channel_binding: bytes | None) -> Any:
        """A fresh Negotiate acceptor (accepts SPNEGO-wrapped and raw NTLM tokens)."""
        cbt = GssChannelBindings(application_data=channel_binding) if channel_binding else None
        with _ntlm_user_file(self.ntlm_file):
            return spnego.server(protocol="negotiate", channel_bindings=cbt)


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

    @property
    def encrypted_session(self) -> bool:
        """Whether a completed Negotiate/NTLM context can wrap messages on this connection."""
        return self.context is not None and self.context.complete

    def challenge_headers(self, allow_basic: bool) -> list[str]:
        """``WWW-Authenticate`` values for a fresh 401."""
        values = []
        if self.methods & {"negotiate", "ntlm"}:
            values.append("Negotiate")
        if "basic" in self.methods and allow_basic:
            values.append('Basic realm="WSMAN"')
        return values

    def check(self, header: str | None, allow_basic: bool) -> AuthOutcome:
        """Process one request's ``Authorization`` header (None = rely on the connection)."""
        if not header:
            if self.user is not None:
                return AuthOutcome("ok")
            return AuthOutcome("denied")
        scheme, _, value = header.partition(" ")
        scheme_l = scheme.lower()
        if scheme_l == "basic" and "basic" in self.methods and allow_basic:
            return self._basic(value.strip())
        if scheme_l in ("negotiate", "ntlm") and self.methods & {"negotiate", "ntlm"}:
            return self._negotiate(value.strip())
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

    def _negotiate(self, value: str) -> AuthOutcome:
        try:
            token = base64.b64decode(value, validate=True)
        except ValueError:
            return AuthOutcome("denied")
        if self.context is None or self.context.complete:
            # A new handshake on this connection replaces any previous context.
            self.context, self.user = self.store.new_acceptor(self.channel_binding), None
        try:
            out = self.store.step(self.context, token)
        except Exception as exc:  # pyspnego raises SpnegoError subclasses and ValueError
            log.info("negotiate auth refused: %s", type(exc).__name__)
            self.context = None
            return AuthOutcome("denied")
        if not self.context.complete:
            return AuthOutcome("continue", out)
        principal = str(self.context.client_principal or "")
        self.user = principal if "\\" in principal else f"{self.store.host_name}\\{principal}"
        log.info("negotiate auth complete user=%s", self.user)
        return AuthOutcome("handshake-done", out)
