"""protocol ssh: PowerShell Remoting over SSH (PowerShell 7's ``powershell`` SSH subsystem).

PowerShell's SSH transport is its out-of-process transport carried by an SSH channel: the
client opens a session channel, asks for the ``powershell`` subsystem (sshd_config
``Subsystem powershell c:/progra~1/powershell/7/pwsh.exe -sshs -NoLogo``), and both ends
exchange the same line-framed packets as local mode (:mod:`worker.remote.local`, whose
:class:`~worker.remote.local.LocalSession` drives this transport unchanged).

SSH is done by paramiko (pinned in pyproject):

* **Host keys** are verified against an OpenSSH ``known_hosts`` file
  (``WINCERT_SSH_KNOWN_HOSTS``; entries ``host`` for port 22, ``[host]:port`` otherwise, hashed
  entries too). Unknown host: refused with ``ssh_host_key_unknown`` unless
  ``WINCERT_SSH_TRUST_ON_FIRST_USE`` is on, then its key is appended (pinned). A host whose
  key differs from the pinned one is always refused (``ssh_host_key_changed``), before any
  credential is sent. (The Keyfactor orchestrator turns host-key checking off: peer §5 B11.)
* **The port** is the store's (default 22).
* **Key authentication** only: the private key comes from the named credential
  (``private_key`` text or ``private_key_file``, optionally encrypted with
  ``private_key_passphrase``) and is parsed in memory; it is never written anywhere.
* Failures are :class:`~worker.remote.errors.TransportFailureError` with a code and a message
  naming the host, port, key fingerprint or setting to fix.
"""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
from pydantic import SecretStr

from producer.codes import ResultCode
from producer.messages import StoreRef
from worker.credential_material import CredentialMaterial
from worker.credentials import Credential
from worker.remote.errors import TransportFailureError
from worker.remote.local import LocalSession, Packet, PacketTransport, read_packets

log = logging.getLogger(__name__)

KNOWN_HOSTS_SETTING = "WINCERT_SSH_KNOWN_HOSTS"
TOFU_SETTING = "WINCERT_SSH_TRUST_ON_FIRST_USE"
_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_TOFU_LOCK = threading.Lock()
_KEY_CACHE: dict[str, paramiko.PKey] = {}
"""Parsed keys by SHA-256 of (key text, passphrase): an encrypted OpenSSH key costs ~0.5 s of
bcrypt KDF to decrypt, once per worker process instead of once per session."""
_KEY_CACHE_SIZE = 32
_KEY_CACHE_LOCK = threading.Lock()


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names the host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def peer_key_text(text: str) -> str:
    """A PEM/OpenSSH key whose line breaks were turned into spaces (pasted into a password
    field, the Keyfactor orchestrator's PR #162) with its lines rebuilt; other text unchanged."""
    match = re.match(r"^\s*(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)\s*$", text, re.S)
    if match is None or "\n" in match.group(2).strip():
        return text
    head, body, tail = match.groups()
    return "\n".join([head, *body.split(), tail]) + "\n"


def load_private_key(credential: Credential) -> paramiko.PKey:
    """The SSH user key of ``credential`` (parsed in memory; Ed25519, ECDSA or RSA).

    Parsed keys are kept per process (see ``_KEY_CACHE``): decrypting an encrypted OpenSSH
    key runs its bcrypt KDF, ~0.5 s.

    Raises:
        TransportFailureError: no key in the credential, unreadable file, wrong passphrase.
    """
    material = credential.material
    password = credential.password.get_secret_value()
    if (material is None or (material.private_key is None and material.private_key_file is None)) and (
        "PRIVATE KEY-----" in password
    ):  # the Keyfactor orchestrator's way: the key is the credential's password (ServerPassword)
        material = CredentialMaterial(private_key=SecretStr(peer_key_text(password)))
    if material is None or (material.private_key is None and material.private_key_file is None):
        raise TransportFailureError(
            ResultCode.CREDENTIAL_UNAVAILABLE,
            f"protocol ssh authenticates with a key, but {credential.label} has none; give it"
            " 'private_key' (the key text) or 'private_key_file' in WINCERT_CREDENTIALS_FILE",
            "credential",
        )
    secret = material.private_key_passphrase
    passphrase = secret.get_secret_value() if secret is not None else None
    if material.private_key is not None:
        text = material.private_key.get_secret_value()
        source = f"the private_key of {credential.label}"
    else:
        assert material.private_key_file is not None
        source = f"private_key_file {material.private_key_file} of {credential.label}"
        try:
            text = material.private_key_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise TransportFailureError(
                ResultCode.CREDENTIAL_UNAVAILABLE, f"cannot read {source}: {exc.strerror}", "credential"
            ) from None
    digest = hashlib.sha256(f"{text}\0{passphrase or ''}".encode()).hexdigest()
    with _KEY_CACHE_LOCK:
        cached = _KEY_CACHE.get(digest)
    if cached is not None:
        return cached
    key = _parse_key(text, passphrase, source)
    with _KEY_CACHE_LOCK:
        _KEY_CACHE[digest] = key
        while len(_KEY_CACHE) > _KEY_CACHE_SIZE:
            _KEY_CACHE.pop(next(iter(_KEY_CACHE)))
    return key


def _parse_key(text: str, passphrase: str | None, source: str) -> paramiko.PKey:
    problems: list[str] = []
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise TransportFailureError(
                ResultCode.CREDENTIAL_UNAVAILABLE,
                f"{source} is encrypted; give its passphrase as private_key_passphrase",
                "credential",
            ) from None
        except (paramiko.SSHException, ValueError) as exc:
            problems.append(f"{cls.__name__}: {exc}")
    wrong = any("passphrase" in p.lower() or "decrypt" in p.lower() for p in problems)
    hint = "check private_key_passphrase" if wrong and passphrase else "give an OpenSSH or PEM private key"
    raise TransportFailureError(
        ResultCode.CREDENTIAL_UNAVAILABLE,
        f"{source} is not a usable Ed25519, ECDSA or RSA private key ({hint})",
        "credential",
    )


class SshChannelClosedError(TransportFailureError, ConnectionError):
    """The SSH connection or the host's PowerShell went away under an open session (network
    drop, sshd restart, pwsh killed). A ``ConnectionError``: the session pool reopens a reused
    session once when this happens at a job's first call, as for a dropped WinRM connection."""


class _SshChannel:
    """A :class:`~worker.remote.local.PacketTransport` over an SSH channel running the subsystem."""

    def __init__(self, transport: paramiko.Transport, channel: paramiko.Channel) -> None:
        self.transport = transport
        self.channel = channel
        self.packets: queue.Queue[Packet | ValueError | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=read_packets, args=(channel.makefile("rb"), self.packets), daemon=True,
                             name="ssh-psrp-out"),
            threading.Thread(target=self._read_stderr, daemon=True, name="ssh-psrp-err"),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stderr(self) -> None:
        try:
            for raw in iter(self.channel.makefile_stderr("rb").readline, b""):
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    self._stderr = [*self._stderr[-19:], text]
                    log.debug("ssh subsystem stderr: %s", text)
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def write(self, line: bytes, timeout: float) -> bool:
        self.channel.settimeout(timeout)
        try:
            self.channel.sendall(line)
        except TimeoutError:
            return False
        except (EOFError, paramiko.SSHException) as exc:
            raise OSError(str(exc)) from exc
        return True

    def status(self, wait: float) -> int | None:
        deadline = time.monotonic() + wait
        while not self.channel.exit_status_ready():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return int(self.channel.recv_exit_status())

    def stderr_text(self, limit: int = 500) -> str:
        return " | ".join(self._stderr)[-limit:]

    def stop(self, grace: float) -> None:
        try:
            self.channel.shutdown_write()
            self.status(grace)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            self.channel.close()
            self.transport.close()
            for thread in self._threads:
                thread.join(1)


class SshSession(LocalSession):
    """A runspace pool on ``store``'s host over SSH (see the module docstring).

    Args:
        store: host and port (``protocol: ssh``).
        credential: user name and key.
        known_hosts: the known_hosts file.
        trust_on_first_use: pin an unknown host's key instead of refusing it.
        subsystem: the sshd subsystem name (``powershell``).
        connection_timeout / read_timeout / call_timeout: as for local mode.
    """

    def __init__(
        self,
        store: StoreRef,
        credential: Credential,
        *,
        known_hosts: Path,
        trust_on_first_use: bool,
        subsystem: str,
        connection_timeout: float,
        read_timeout: float,
        call_timeout: float,
    ) -> None:
        self.host, self.port = store.host, store.effective_port
        self.credential = credential
        self.known_hosts = known_hosts
        self.trust_on_first_use = trust_on_first_use
        self.subsystem = subsystem
        super().__init__(
            (f"ssh://{credential.username}@{self.host}:{self.port}",),
            f"{self.host}:{self.port}",
            connection_timeout=connection_timeout,
            read_timeout=read_timeout,
            call_timeout=call_timeout,
        )

    def close_orphan(self, orphan: object) -> None:
        """A broken SSH session has nothing to clean up through another one: close it."""
        if isinstance(orphan, LocalSession):
            orphan.close()

    # ---- connecting -------------------------------------------------------------------------
    def _spawn(self) -> PacketTransport:
        key = load_private_key(self.credential)
        where = self.where
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connection_timeout)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            if isinstance(exc, TimeoutError):
                reason = "connect timeout"
            raise TransportFailureError(
                ResultCode.HOST_UNREACHABLE,
                f"cannot reach SSH at {where} ({reason}): check the host name, port {self.port} and that"
                " sshd runs there (Windows: the OpenSSH Server feature) and the firewall allows it",
                "connect",
            ) from None
        transport = paramiko.Transport(sock)
        try:
            known = self._known_keys()
            if known:  # ask for the key type we can verify (as OpenSSH orders its HostKeyAlgorithms)
                options = transport.get_security_options()
                preferred = [t for t in options.key_types if t in known]
                options.key_types = tuple(preferred + [t for t in options.key_types if t not in known])
            transport.start_client(timeout=self.connection_timeout)
            self._verify_host_key(transport.get_remote_server_key(), known)
            try:
                transport.auth_publickey(self.credential.username, key)
            except paramiko.AuthenticationException:
                raise TransportFailureError(
                    ResultCode.AUTH_FAILED,
                    f"{where} refused the SSH key {key.fingerprint} of {self.credential.label} for user"
                    f" {self.credential.username!r}: check that its public key is in the user's"
                    " authorized_keys on the host (administrators: administrators_authorized_keys)",
                    "auth",
                ) from None
            channel = transport.open_session(timeout=self.connection_timeout)
            try:
                channel.invoke_subsystem(self.subsystem)
            except paramiko.SSHException:
                channel.close()
                raise TransportFailureError(
                    ResultCode.SSH_SUBSYSTEM_UNAVAILABLE,
                    f"{where} has no SSH subsystem {self.subsystem!r}: add 'Subsystem {self.subsystem}"
                    " c:/progra~1/powershell/7/pwsh.exe -sshs -NoLogo' to the host's sshd_config"
                    " (PowerShell 7 installed) and restart sshd, or set WINCERT_SSH_SUBSYSTEM",
                    "connect",
                ) from None
        except TransportFailureError:
            transport.close()
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            raise TransportFailureError(
                ResultCode.HOST_UNREACHABLE,
                f"the SSH handshake with {where} failed ({type(exc).__name__}: {str(exc)[:200]}); check"
                f" that port {self.port} is an SSH server",
                "connect",
            ) from None
        return _SshChannel(transport, channel)

    def _known_keys(self) -> dict[str, paramiko.PKey]:
        try:
            keys = paramiko.HostKeys()
            if self.known_hosts.exists():
                keys.load(str(self.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise TransportFailureError(
                ResultCode.SSH_HOST_KEY_UNKNOWN,
                f"cannot read {KNOWN_HOSTS_SETTING} ({self.known_hosts}): {exc}; fix the file",
                "ssh_host_key",
            ) from None
        entry = keys.lookup(known_hosts_name(self.host, self.port))
        return dict(entry) if entry is not None else {}

    def _verify_host_key(self, key: paramiko.PKey, known: dict[str, paramiko.PKey]) -> None:
        name = known_hosts_name(self.host, self.port)
        offered = f"{key.get_name()} {key.fingerprint}"
        if known:
            pinned = known.get(key.get_name())
            if pinned is not None and pinned == key:
                return
            pins = ", ".join(f"{k.get_name()} {k.fingerprint}" for k in known.values())
            raise TransportFailureError(
                ResultCode.SSH_HOST_KEY_CHANGED,
                f"the SSH host key of {self.where} changed: it presented {offered}, but"
                f" {self.known_hosts} pins {pins} for {name}. Nothing was sent. If the host was"
                f" rebuilt or its key rotated, check the new fingerprint on the host, then replace its"
                f" line (ssh-keygen -R '{name}' -f {self.known_hosts})",
                "ssh_host_key",
            )
        if not self.trust_on_first_use:
            raise TransportFailureError(
                ResultCode.SSH_HOST_KEY_UNKNOWN,
                f"the SSH host key of {self.where} ({offered}) is not in {KNOWN_HOSTS_SETTING}"
                f" ({self.known_hosts}); add it after checking the fingerprint on the host (ssh-keyscan"
                f" -p {self.port} {self.host} >> {self.known_hosts}), or set {TOFU_SETTING}=true to pin"
                " keys on first use",
                "ssh_host_key",
            )
        with _TOFU_LOCK:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a", encoding="utf-8") as handle:
                handle.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        log.warning("pinned the SSH host key of %s on first use: %s", name, offered)

    # ---- messages ---------------------------------------------------------------------------
    def _timed_out(self, what: str, limit: str) -> TransportFailureError:
        seconds = self._limit(limit)
        return TransportFailureError(
            ResultCode.TIMEOUT,
            f"PowerShell over SSH on {self.where} did not {what} within {seconds[0]:g} s ({seconds[1]});"
            f" check the host's load, or raise {seconds[1]}",
            "timeout",
        )

    def _exited(self, what: str) -> TransportFailureError:
        child = self._require_child()
        status = child.status(1.0)
        detail = f"exited with status {status}" if status is not None else "closed the channel"
        stderr = child.stderr_text()
        tail = f"; its stderr: {stderr}" if stderr else ""
        error: type[TransportFailureError] = SshChannelClosedError if self.opened else TransportFailureError
        code, kind = (ResultCode.REMOTE_ERROR, "remote_error") if self.opened else (
            ResultCode.SSH_SUBSYSTEM_UNAVAILABLE, "connect")
        return error(
            code,
            f"the SSH subsystem {self.subsystem!r} on {self.where} {detail} while trying to {what}{tail};"
            " check that it runs PowerShell 7 in SSH server mode (pwsh -sshs)",
            kind,
        )


def ssh_session_kwargs(options: Any) -> dict[str, Any]:
    """:class:`SshSession` keyword arguments from :class:`~worker.remote.session.SessionOptions`."""
    return {
        "known_hosts": options.ssh_known_hosts or Path.home() / ".ssh" / "known_hosts",
        "trust_on_first_use": options.ssh_trust_on_first_use,
        "subsystem": options.ssh_subsystem,
        "connection_timeout": options.connection_timeout,
        "read_timeout": options.read_timeout,
        "call_timeout": options.call_timeout,
    }
