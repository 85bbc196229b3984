"""Credential material other than a password: Kerberos keytab / cache, SSH key, client certificate.

Only named credentials (``WINCERT_CREDENTIALS_FILE``, on the worker) carry it; a job never
does. One entry of the credentials file, besides ``username``/``password``, may hold:

* ``keytab``: path of a keytab; ``username`` is the principal to use from it (``svc@REALM``).
* ``ccache``: ``default`` (the worker's own ticket cache: ``KRB5CCNAME``, refreshed by the
  operator's ``kinit``/``k5start``/gMSA tooling) or a cache name such as ``FILE:/path``;
  ``username`` optional (then the cache's default principal).
* ``private_key`` (PEM or OpenSSH text) or ``private_key_file`` (a path), optionally
  encrypted with ``private_key_passphrase``: the SSH user key (``protocol: ssh``), loaded into
  memory only, never written anywhere.
* ``certificate_file`` + ``private_key_file`` (+ ``private_key_passphrase``): a client
  certificate for ``auth: certificate`` over HTTPS (WinRM certificate mapping). The key file
  should be encrypted; its passphrase stays in the credentials file.

:func:`parse_material` checks shapes only (types, one Kerberos source); files are opened when
used, so a missing file is reported with the job that needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

_KEYS = ("keytab", "ccache", "private_key", "private_key_file", "private_key_passphrase", "certificate_file")


class MaterialError(Exception):
    """A credential entry's material is malformed; the message names the entry and the key."""


@dataclass(frozen=True)
class CredentialMaterial:
    """What a named credential holds besides a password (see the module docstring)."""

    keytab: Path | None = None
    ccache: str | None = None
    """``default`` or a cache name (``FILE:/path``)."""
    private_key: SecretStr | None = field(default=None, repr=False)
    private_key_file: Path | None = None
    private_key_passphrase: SecretStr | None = field(default=None, repr=False)
    certificate_file: Path | None = None

    @property
    def kerberos(self) -> bool:
        """Whether this is a Kerberos keytab or cache credential."""
        return self.keytab is not None or self.ccache is not None

    def fingerprint_material(self) -> bytes:
        """Bytes that differ for every distinct material (hashed by the session pool; the key
        text and passphrase enter only through SHA-256)."""
        def digest(secret: SecretStr | None) -> str:
            return hashlib.sha256(secret.get_secret_value().encode()).hexdigest() if secret else ""

        parts = [
            str(self.keytab or ""),
            self.ccache or "",
            digest(self.private_key),
            str(self.private_key_file or ""),
            digest(self.private_key_passphrase),
            str(self.certificate_file or ""),
        ]
        return "\0".join(parts).encode("utf-8")


def _text(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise MaterialError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_material(entry: dict[str, Any], where: str) -> CredentialMaterial | None:
    """The material of one credentials-file entry, or None when it has none (password only).

    Raises:
        MaterialError: a key has the wrong type, or both ``keytab`` and ``ccache`` are given,
            or a client certificate lacks its key file.
    """
    if not any(entry.get(key) is not None for key in _KEYS):
        return None
    keytab = _text(entry, "keytab", where)
    ccache = _text(entry, "ccache", where)
    if keytab and ccache:
        raise MaterialError(f"{where}: give either 'keytab' or 'ccache', not both")
    if keytab and not isinstance(entry.get("username"), str):
        raise MaterialError(f"{where}: 'keytab' needs 'username', the principal to use from it (svc@REALM)")
    key = _text(entry, "private_key", where)
    key_file = _text(entry, "private_key_file", where)
    if key and key_file:
        raise MaterialError(f"{where}: give either 'private_key' or 'private_key_file', not both")
    passphrase = _text(entry, "private_key_passphrase", where)
    certificate = _text(entry, "certificate_file", where)
    if certificate and not key_file:
        raise MaterialError(
            f"{where}: 'certificate_file' needs 'private_key_file' (the certificate's key, PEM,"
            " preferably encrypted with 'private_key_passphrase')"
        )
    return CredentialMaterial(
        keytab=Path(keytab) if keytab else None,
        ccache=ccache,
        private_key=SecretStr(key) if key else None,
        private_key_file=Path(key_file) if key_file else None,
        private_key_passphrase=SecretStr(passphrase) if passphrase else None,
        certificate_file=Path(certificate) if certificate else None,
    )
