"""Resolve a job's credential reference to a username and password, on the worker.

* :class:`~producer.messages.NamedCredential` ``name``: looked up in ``WINCERT_CREDENTIALS_FILE``
  (JSON or YAML ``{name: {username, password}}``), then in the environment variables
  ``WINCERT_CREDENTIAL_<NAME>_USERNAME`` / ``_PASSWORD`` (``<NAME>``: the name upper-cased,
  every character other than a letter or digit replaced by ``_``).
* :class:`~producer.messages.InlineCredential`: ``password_encrypted`` is decrypted with
  ``WINCERT_SECRET_KEYS``; ``password_plaintext`` is accepted only with
  ``WINCERT_ALLOW_PLAINTEXT_SECRETS=true``.
* No credential: ``WINCERT_DEFAULT_CREDENTIAL`` names one; without it the job fails.
* Kerberos and SSH material (credentials file only, :mod:`worker.credential_material`): an
  entry may give ``keytab`` (a keytab path; ``username`` is its principal) or ``ccache``
  (``default`` or ``FILE:/path``: the worker's own ticket, the gMSA case) instead of a
  password, and ``private_key``/``private_key_file`` (+ ``private_key_passphrase``) for SSH.

Every failure raises :class:`CredentialError` whose message names the setting to fix and
never contains a password.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from producer.messages import InlineCredential, NamedCredential
from producer.secrets import SecretKeyError, decrypt_secret
from worker.credential_material import CredentialMaterial, MaterialError, parse_material
from worker.settings import WorkerSettings


class CredentialError(Exception):
    """The credential cannot be resolved; the message says which setting to fix."""


@dataclass(frozen=True)
class Credential:
    """A resolved credential. ``password`` is a SecretStr: ``repr`` and logs never show it."""

    label: str
    """How messages name it: ``credential 'ops'`` or ``inline credential of user 'x'``."""
    username: str
    password: SecretStr = field(repr=False)
    material: CredentialMaterial | None = field(default=None, repr=False)
    """Kerberos keytab / credential cache, SSH private key (named credentials only)."""
    hosts: tuple[str, ...] | None = None
    """The credential's scope: host patterns it may be sent to (None: unscoped). See
    :func:`in_scope`."""


class CredentialScopeError(CredentialError):
    """A named credential is paired with a host outside its ``hosts`` scope (refused before any
    connection; code ``credential_out_of_scope``)."""


def _host_patterns(value: Any, where: str) -> tuple[str, ...] | None:
    """A credential entry's ``hosts`` (list or comma-separated text) checked; None when absent."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise CredentialError(f"{where}: 'hosts' must be a list of host names, *.domains and CIDRs")
    patterns = tuple(i.strip().lower().rstrip(".") for i in items if i.strip())
    for pattern in patterns:
        if "/" in pattern:
            try:
                ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                raise CredentialError(f"{where}: 'hosts' entry {pattern!r} is not a CIDR") from None
        elif "*" in pattern and (not pattern.startswith("*.") or "*" in pattern[2:] or len(pattern) < 4):
            raise CredentialError(
                f"{where}: 'hosts' entry {pattern!r}: a wildcard is only a leading '*.' (*.contoso.com)"
            )
    return patterns


def in_scope(host: str, patterns: tuple[str, ...]) -> bool:
    """True when ``host`` (a job's ``client_machine``) matches one of ``patterns``.

    * ``web01.contoso.com``: that name exactly (case-insensitive, a trailing dot ignored);
    * ``*.contoso.com``: any name *under* contoso.com (not contoso.com itself);
    * ``10.1.0.0/16``, ``fd00::/8``: an IP literal inside the network; an IP literal also
      matches an equal single address. Names are never resolved (DNS would let whoever
      controls DNS move a credential): a CIDR scope admits IP literals only.
    """
    name = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        address = None
    for pattern in patterns:
        if "/" in pattern:
            if address is not None and address in ipaddress.ip_network(pattern, strict=False):
                return True
        elif pattern.startswith("*."):
            if address is None and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif address is not None:
            try:
                if address == ipaddress.ip_address(pattern):
                    return True
            except ValueError:
                continue
        elif name == pattern:
            return True
    return False


def check_scope(credential: Credential, host: str) -> None:
    """Raise :class:`CredentialScopeError` when ``credential`` may not be sent to ``host``."""
    if credential.hosts is None or in_scope(host, credential.hosts):
        return
    raise CredentialScopeError(
        f"{credential.label} may not be sent to host {host!r}: its scope ('hosts' in"
        f" WINCERT_CREDENTIALS_FILE or WINCERT_CREDENTIAL_<NAME>_HOSTS) is {', '.join(credential.hosts)};"
        " nothing was sent. Use a credential meant for that host, or widen the scope"
    )


def env_name(name: str, part: str) -> str:
    """``WINCERT_CREDENTIAL_<NAME>_<PART>`` for a credential name."""
    return f"WINCERT_CREDENTIAL_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_{part}"


class CredentialResolver:
    """Resolves credential references with the worker's settings (thread-safe, file cached by mtime)."""

    def __init__(self, settings: WorkerSettings, environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = environ if environ is not None else os.environ
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Any]] | None = None

    def resolve(self, ref: NamedCredential | InlineCredential | None) -> Credential:
        """The credential for a job's ``store.credential``.

        Raises:
            CredentialError: not configured, unreadable, or not decryptable.
        """
        if ref is None:
            if not self.settings.default_credential:
                raise CredentialError(
                    "the job names no credential and WINCERT_DEFAULT_CREDENTIAL is not set; set it to"
                    " a credential name from WINCERT_CREDENTIALS_FILE, or give store.credential in the job"
                )
            return self._named(self.settings.default_credential)
        if isinstance(ref, NamedCredential):
            return self._named(ref.name)
        return self._inline(ref)

    def known_secrets(self) -> list[str]:
        """Every secret value this worker holds itself: the passwords of the credentials file and
        of ``WINCERT_CREDENTIAL_*_PASSWORD`` variables, and ``WINCERT_SECRET_KEYS``. Used to
        redact by value (dead letters, logs); never logged. An unreadable file adds nothing."""
        found: list[str] = []
        try:
            entries = self._file_entries()
        except CredentialError:
            entries = {}
        for entry in entries.values():
            if isinstance(entry, dict):
                found.extend(
                    entry[k]
                    for k in ("password", "private_key", "private_key_passphrase")
                    if isinstance(entry.get(k), str)
                )
        found.extend(
            value
            for name, value in self.environ.items()
            if name.startswith("WINCERT_CREDENTIAL_") and name.endswith("_PASSWORD") and value
        )
        if self.settings.secret_keys is not None:
            keys = self.settings.secret_keys.get_secret_value().split(",")
            found.extend(k.strip() for k in keys if k.strip())
        return [s for s in found if s]

    def _inline(self, ref: InlineCredential) -> Credential:
        label = f"inline credential of user '{ref.username}'"
        if ref.password_encrypted is not None:
            if self.settings.secret_keys is None:
                raise CredentialError(
                    "the job carries an encrypted password but WINCERT_SECRET_KEYS is not set on the"
                    " worker; set it to the Fernet key(s) the producer uses"
                )
            try:
                password = decrypt_secret(
                    ref.password_encrypted, self.settings.secret_keys.get_secret_value()
                )
            except SecretKeyError as exc:
                raise CredentialError(str(exc)) from None
            return Credential(label, ref.username, SecretStr(password))
        if not self.settings.allow_plaintext_secrets:
            raise CredentialError(
                "the job carries a plaintext password, which this worker refuses; send"
                " password_encrypted (Fernet, WINCERT_SECRET_KEYS) or set"
                " WINCERT_ALLOW_PLAINTEXT_SECRETS=true (development only)"
            )
        assert ref.password_plaintext is not None  # guaranteed by InlineCredential's validator
        return Credential(label, ref.username, ref.password_plaintext)

    def _named(self, name: str) -> Credential:
        label = f"credential '{name}'"
        entry = self._file_entries().get(name)
        if entry is not None:
            username, password = entry.get("username"), entry.get("password")
            where = f"{label} in WINCERT_CREDENTIALS_FILE ({self.settings.credentials_file})"
            try:
                material = parse_material(entry, where)
            except MaterialError as exc:
                raise CredentialError(str(exc)) from None
            hosts = _host_patterns(entry.get("hosts"), where)
            if material is not None:
                return Credential(label, str(username or ""), SecretStr(str(password or "")), material, hosts)
            if not isinstance(username, str) or not username or not isinstance(password, str):
                raise CredentialError(
                    f"{where} needs a non-empty 'username' and a 'password' string (or a Kerberos"
                    " 'keytab' / 'ccache', or an SSH 'private_key')"
                )
            return Credential(label, username, SecretStr(password), hosts=hosts)
        user_var, pass_var = env_name(name, "USERNAME"), env_name(name, "PASSWORD")
        username_env, password_env = self.environ.get(user_var), self.environ.get(pass_var)
        if username_env and password_env is not None:
            hosts_var = env_name(name, "HOSTS")
            hosts_env = _host_patterns(self.environ.get(hosts_var), hosts_var)
            return Credential(label, username_env, SecretStr(password_env), hosts=hosts_env)
        where = (
            f"WINCERT_CREDENTIALS_FILE ({self.settings.credentials_file})"
            if self.settings.credentials_file
            else "WINCERT_CREDENTIALS_FILE (not set)"
        )
        raise CredentialError(
            f"{label} is not configured on this worker: add it to {where} or set {user_var} and {pass_var}"
        )

    def _file_entries(self) -> dict[str, Any]:
        path: Path | None = self.settings.credentials_file
        if path is None:
            return {}
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise CredentialError(
                f"WINCERT_CREDENTIALS_FILE ({path}) cannot be read: {exc.strerror}"
            ) from None
        with self._lock:
            if self._cache is not None and self._cache[0] == mtime:
                return self._cache[1]
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
                # the YAML error text may quote file content (a password): name only its type and place
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                raise CredentialError(
                    f"WINCERT_CREDENTIALS_FILE ({path}) is not valid JSON/YAML ({type(exc).__name__}{where});"
                    " expected {name: {username: ..., password: ...}}"
                ) from None
            if data is None:
                data = {}
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise CredentialError(
                    f"WINCERT_CREDENTIALS_FILE ({path}) must map credential names to"
                    " {username: ..., password: ...}"
                )
            entries = {str(k): v for k, v in data.items()}
            self._cache = (mtime, entries)
            return entries
