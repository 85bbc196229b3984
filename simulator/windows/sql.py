"""SQL Server on a simulated host: instances, their TLS certificate setting, services, key ACLs.

What Windows keeps in several places is modelled in one object:

* the registry: ``HKLM:\\SOFTWARE\\Microsoft\\Microsoft SQL Server\\Instance Names\\SQL`` maps an
  instance name to its instance id (``MSSQL16.MSSQLSERVER``); the ``Certificate`` value under
  ``...\\<id>\\MSSQLServer\\SuperSocketNetLib`` holds the thumbprint (written in lower case, as
  SQL Server Configuration Manager does; compared case-insensitively);
* the service ``MSSQLSERVER`` / ``MSSQL$<name>``: its account (``Win32_Service.StartName``) and
  state;
* the private-key file ACLs: which accounts may read the key of a certificate (keyed by
  thumbprint; rules are by SID, the names are what Windows shows). ``SYSTEM`` (S-1-5-18) and
  ``BUILTIN\\Administrators`` (S-1-5-32-544) always can. The key type and provider (RSA or
  ECDSA; CAPI or CNG) make no difference to granting;
* accounts by SID (:func:`account_sid`): the well-known LocalSystem / LocalService /
  NetworkService (S-1-5-18/19/20, named in the host's display language: ``NT-AUTORITÄT\\SYSTEM``
  on de-DE, where ``NT AUTHORITY\\SYSTEM`` does not resolve), service SIDs
  ``NT SERVICE\\<service>`` (S-1-5-80-..., computed from the name as Windows does), other
  accounts with a stable made-up domain SID;
* the instance's version (``Setup\\PatchLevel``) and its service's SID type
  (``ServiceSidType``: 0 none, 1 unrestricted, 3 restricted).

Changes go through :meth:`SqlServer.bind` / :meth:`SqlServer.clear`, which behave like
``Set-WinCertSqlCertificate`` / ``Clear-WinCertSqlCertificate`` (``worker/powershell/Sql.ps1``)
and raise :class:`SqlError` with the ``WinCert.*`` error id.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from simulator.config import SqlInstanceSpec

DEFAULT_INSTANCE = "MSSQLSERVER"
DEFAULT_KEY_READERS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")
DEFAULT_KEY_READER_SIDS = ("S-1-5-18", "S-1-5-32-544")
CRYPTO_DIR = "C:\\ProgramData\\Microsoft\\Crypto"
ECC_MINIMUM_MAJOR_VERSION = 16
"""SQL Server 2022: the first version that can use an ECDSA TLS certificate (the rule and its
source: ``worker/jobs/winsql.py`` ``ECC_MINIMUM_MAJOR_VERSION``; tests/contract)."""

WELL_KNOWN_NAMES: dict[str, dict[str, str]] = {
    "en-US": {"S-1-5-18": "NT AUTHORITY\\SYSTEM", "S-1-5-19": "NT AUTHORITY\\LOCAL SERVICE",
              "S-1-5-20": "NT AUTHORITY\\NETWORK SERVICE"},
    "de-DE": {"S-1-5-18": "NT-AUTORITÄT\\SYSTEM", "S-1-5-19": "NT-AUTORITÄT\\LOKALER DIENST",
              "S-1-5-20": "NT-AUTORITÄT\\NETZWERKDIENST"},
}
"""How Windows names the well-known service accounts, per display language."""
_WELL_KNOWN_USERS = {"LOCALSYSTEM": "S-1-5-18", "LOCALSERVICE": "S-1-5-19", "LOCAL SERVICE": "S-1-5-19",
                     "NETWORKSERVICE": "S-1-5-20", "NETWORK SERVICE": "S-1-5-20"}


def service_sid(service_name: str) -> str:
    """The service SID of ``NT SERVICE\\<service_name>``: S-1-5-80- and the SHA-1 of the
    upper-case name in UTF-16LE as five little-endian 32-bit sub-authorities (``sc showsid``)."""
    digest = hashlib.sha1(service_name.upper().encode("utf-16-le")).digest()  # noqa: S324 - Windows' rule
    return "S-1-5-80-" + "-".join(str(part) for part in struct.unpack("<5I", digest))


def ecc_problem(version: str) -> str | None:
    """Why an instance of ``version`` cannot use an ECDSA certificate (None: it can); the
    text of ``Test-WinCertPrivateSqlEccSupport``."""
    parts = version.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return "its version could not be read"
    if int(parts[0]) < ECC_MINIMUM_MAJOR_VERSION:
        return f"it is version {version.strip()}; ECDSA certificates need SQL Server 2022 (16.x) or later"
    return None


def account_sid(start_name: str, computer_name: str, language: str = "en-US") -> tuple[str, str]:
    """``(SID, name as Windows shows it)`` of a service's start account, the way
    ``ConvertTo-WinCertPrivateAccountSid`` resolves it: well-known accounts by the user part
    (LocalSystem, LocalService, NetworkService; ``<domain>\\SYSTEM``), ``NT SERVICE\\x`` by its
    service SID, anything else by name (a made-up, stable domain SID here).

    Raises:
        LookupError: the English name of a well-known account on a host in another language
            (what NTAccount.Translate does there: "Some or all identity references could not be
            translated").
    """
    names = WELL_KNOWN_NAMES.get(language, WELL_KNOWN_NAMES["en-US"])
    sid = _WELL_KNOWN_USERS.get(start_name.strip().rpartition("\\")[2].upper())
    if sid is not None:  # LocalSystem / LocalService / NetworkService: by SID, never by name
        return sid, names[sid]
    name = normalise_account(start_name, computer_name)
    domain, _, user = name.rpartition("\\")
    for known_sid, known_name in names.items():  # the name Windows shows resolves back
        if name.upper() == known_name.upper():
            return known_sid, known_name
    if sid is None and user.upper() == "SYSTEM" and domain:
        if domain.upper() != names["S-1-5-18"].split("\\")[0].upper() and language != "en-US":
            raise LookupError("Some or all identity references could not be translated.")
        sid = "S-1-5-18"
    if sid is not None:
        return sid, names[sid]
    if domain.upper() == "NT SERVICE":
        return service_sid(user), f"NT SERVICE\\{user}"
    digest = hashlib.sha1(name.upper().encode("utf-8")).digest()  # noqa: S324 - a stable made-up SID
    a, b, c, rid = struct.unpack("<4I", digest[:16])
    return f"S-1-5-21-{a}-{b}-{c}-{1000 + rid % 100000}", name


class SqlError(Exception):
    """A terminating error of a SQL Server operation (``error_id`` is the ``WinCert.*`` id)."""

    def __init__(self, message: str, error_id: str, category: str, target: str | None = None,
                 exception_type: str = "System.InvalidOperationException") -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.target = target
        self.exception_type = exception_type


def service_name_of(instance_name: str) -> str:
    """``MSSQLSERVER`` for the default instance, ``MSSQL$<name>`` for a named one."""
    return DEFAULT_INSTANCE if instance_name.upper() == DEFAULT_INSTANCE else f"MSSQL${instance_name}"


def normalise_account(account: str, computer_name: str) -> str:
    """How a service's ``StartName`` is turned into an account for an ACL.

    ``LocalSystem`` → ``NT AUTHORITY\\SYSTEM``; ``.\\user`` → ``<COMPUTERNAME>\\user``; anything
    else (``NT Service\\MSSQLSERVER``, ``DOMAIN\\user``, ``user@domain``) unchanged.
    """
    account = account.strip()
    if account.casefold() == "localsystem":
        return "NT AUTHORITY\\SYSTEM"
    if account.startswith(".\\"):
        return f"{computer_name}\\{account[2:]}"
    return account


def key_file_path(thumbprint: str, key: PrivateKeyTypes) -> str:
    """Where Windows would keep the machine key of this certificate (for messages only).

    RSA keys of the simulator are CAPI containers (``RSA\\MachineKeys``), DSA keys CAPI DSS
    containers, everything else (ECDSA) CNG keys (``Keys``); granting works the same for all.
    """
    name = f"{thumbprint.lower()[:32]}_machine"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"{CRYPTO_DIR}\\RSA\\MachineKeys\\{name}"
    if isinstance(key, dsa.DSAPrivateKey):
        return f"{CRYPTO_DIR}\\DSS\\MachineKeys\\{name}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{CRYPTO_DIR}\\Keys\\{name}"
    return f"{CRYPTO_DIR}\\Keys\\{name}"


@dataclass
class SqlInstance:
    """One installed instance: registry, service and the certificate setting."""

    name: str
    instance_id: str
    certificate: str = ""
    service_account: str = ""
    service_state: str = "Running"
    restart_fails: bool = False
    version: str = "16.0.4135.4"
    service_sid_type: int = 1

    @property
    def service_name(self) -> str:
        return service_name_of(self.name)

    @property
    def display_name(self) -> str:
        return f"SQL Server ({self.name})"

    @property
    def thumbprint(self) -> str:
        """The ``Certificate`` registry value as the contract reports it (upper case, or "")."""
        return self.certificate.strip().upper()


@dataclass(frozen=True)
class KeyGrant:
    """One account with read access to the key: as ``KeyAccess`` of ``Set-WinCertSqlCertificate``."""

    account: str
    sid: str
    granted: bool  # this call added the rule


@dataclass(frozen=True)
class BindResult:
    instance_name: str
    outcome: str  # bound | unchanged
    restarted: bool
    restart_error: str | None
    account: str
    key_file: str
    acl_granted: bool
    key_access: tuple[KeyGrant, ...] = ()


@dataclass(frozen=True)
class ClearResult:
    instance_name: str
    outcome: str  # unbound | not_bound
    current_thumbprint: str | None
    restarted: bool
    restart_error: str | None


@dataclass
class SqlServer:
    """All SQL Server instances of a host plus the key-file ACLs. Methods take ``lock``."""

    computer_name: str
    lock: threading.RLock
    on_change: Callable[[], None] = field(default=lambda: None)
    instances: list[SqlInstance] = field(default_factory=list)
    key_acls: dict[str, list[str]] = field(default_factory=dict)
    language: str = "en-US"

    # -- construction / persistence -------------------------------------------------------

    @classmethod
    def from_config(cls, specs: list[SqlInstanceSpec], computer_name: str, lock: threading.RLock,
                    on_change: Callable[[], None] | None = None) -> SqlServer:
        server = cls(computer_name, lock, on_change or (lambda: None))
        for spec in specs:
            server.instances.append(SqlInstance(
                name=spec.name,
                instance_id=spec.instance_id or f"MSSQL16.{spec.name.upper()}",
                certificate=spec.certificate,
                service_account=spec.service_account or f"NT Service\\{service_name_of(spec.name)}",
                service_state=spec.service_state,
                restart_fails=spec.restart_fails,
                version=spec.version,
                service_sid_type=spec.service_sid_type,
            ))
        return server

    def to_state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "instances": [
                    {"name": i.name, "instance_id": i.instance_id, "certificate": i.certificate,
                     "service_account": i.service_account, "service_state": i.service_state,
                     "restart_fails": i.restart_fails, "version": i.version,
                     "service_sid_type": i.service_sid_type}
                    for i in self.instances
                ],
                "key_acls": {k: list(v) for k, v in self.key_acls.items()},
            }

    @classmethod
    def from_state(cls, state: dict[str, Any], computer_name: str, lock: threading.RLock,
                   on_change: Callable[[], None] | None = None) -> SqlServer:
        """Inverse of :meth:`to_state` (raises KeyError / TypeError on malformed state)."""
        server = cls(computer_name, lock, on_change or (lambda: None))
        for i in state["instances"]:
            server.instances.append(SqlInstance(
                str(i["name"]), str(i["instance_id"]), str(i["certificate"]), str(i["service_account"]),
                str(i["service_state"]), bool(i["restart_fails"]), str(i.get("version", "16.0.4135.4")),
                int(i.get("service_sid_type", 1))))
        server.key_acls = {str(k).upper(): [str(a) for a in v] for k, v in state["key_acls"].items()}
        return server

    # -- queries --------------------------------------------------------------------------

    def find(self, name: str) -> SqlInstance | None:
        """The instance called ``name`` (registry value names compare case-insensitively)."""
        with self.lock:
            wanted = name.casefold()
            return next((i for i in self.instances if i.name.casefold() == wanted), None)

    def account_of(self, instance: SqlInstance) -> str:
        """The instance's normalised service account."""
        return normalise_account(instance.service_account, self.computer_name)

    def key_readers(self, thumbprint: str) -> list[str]:
        """Accounts with Read on the certificate's key file (the defaults, then the grants)."""
        with self.lock:
            return [*DEFAULT_KEY_READERS, *self.key_acls.get(thumbprint.upper(), [])]

    def key_reader_sids(self, thumbprint: str) -> list[str]:
        """SIDs with Read on the certificate's key file (the defaults, then the grants)."""
        with self.lock:
            granted = []
            for name in self.key_acls.get(thumbprint.upper(), []):
                try:
                    granted.append(account_sid(name, self.computer_name, self.language)[0])
                except LookupError:
                    continue
            return [*DEFAULT_KEY_READER_SIDS, *granted]

    def usage(self, thumbprint: str) -> list[str]:
        """``SQL Server instance <name>`` for every instance whose Certificate is ``thumbprint``."""
        wanted = thumbprint.upper()
        with self.lock:
            return [f"SQL Server instance {i.name}" for i in self.instances if i.thumbprint == wanted]

    # -- changes --------------------------------------------------------------------------

    def bind(self, *, instance_name: str, thumbprint: str, store_name: str, store_found: bool,
             private_key: PrivateKeyTypes | None, present: bool, restart: bool) -> BindResult:
        """ACL grant → registry value → optional restart (see ``Set-WinCertSqlCertificate``)."""
        thumbprint = thumbprint.upper()
        with self.lock:
            instance = self.find(instance_name)
            if instance is None:
                raise instance_not_found(instance_name)
            where = f"LocalMachine\\{store_name}"
            if not store_found or not present:
                raise SqlError(f"Certificate {thumbprint} was not found in {where}.",
                               "WinCert.CertificateNotFound", "ObjectNotFound", thumbprint,
                               "System.Management.Automation.ItemNotFoundException")
            if private_key is None:
                raise SqlError(f"Certificate {thumbprint} in {where} has no private key.",
                               "WinCert.PrivateKeyNotFound", "ObjectNotFound", thumbprint,
                               "System.Management.Automation.ItemNotFoundException")
            key_file = key_file_path(thumbprint, private_key)
            if isinstance(private_key, ec.EllipticCurvePrivateKey):
                problem = ecc_problem(instance.version)
                if problem is not None:
                    raise SqlError(
                        f"Certificate {thumbprint} has an ECDSA key, which SQL Server instance"
                        f" '{instance.name}' cannot use: {problem}. Bind an RSA certificate, or upgrade the"
                        " instance.", "WinCert.SqlEccNotSupported", "InvalidOperation", thumbprint)
            account = self.account_of(instance)
            if not account:
                raise SqlError(
                    f"Cannot grant Read on the private key of certificate {thumbprint} ({key_file}): the "
                    f"service {instance.service_name} has no account.",
                    "WinCert.KeyAclFailed", "PermissionDenied", thumbprint)
            try:
                principals = [account_sid(instance.service_account, self.computer_name, self.language)]
            except LookupError as exc:
                raise SqlError(
                    f"Cannot grant Read on the private key of certificate {thumbprint} ({key_file}): {exc}"
                    .rstrip(".") + ".", "WinCert.KeyAclFailed", "PermissionDenied", thumbprint) from None
            if instance.service_sid_type in (1, 3):
                own = (service_sid(instance.service_name), f"NT SERVICE\\{instance.service_name}")
                if own[0] not in {sid for sid, _ in principals}:
                    principals.append(own)
            readable = set(self.key_reader_sids(thumbprint))
            access = []
            for sid, name in principals:
                granted_now = sid not in readable
                if granted_now:
                    self.key_acls.setdefault(thumbprint, []).append(name)
                    readable.add(sid)
                access.append(KeyGrant(name, sid, granted_now))
            granted = any(a.granted for a in access)
            account = principals[0][1]
            changed_value = instance.thumbprint != thumbprint
            if changed_value:
                instance.certificate = thumbprint.lower()
            restarted, error = self._restart(instance) if restart else (False, None)
            self.on_change()
            outcome = "bound" if granted or changed_value else "unchanged"
            return BindResult(instance.name, outcome, restarted, error, account, key_file, granted,
                              tuple(access))

    def clear(self, *, instance_name: str, thumbprint: str, restart: bool) -> ClearResult:
        """Empty the Certificate value only if it is ``thumbprint``; restart only then."""
        thumbprint = thumbprint.upper()
        with self.lock:
            instance = self.find(instance_name)
            if instance is None:
                raise instance_not_found(instance_name)
            current = instance.thumbprint or None
            if current != thumbprint:
                return ClearResult(instance.name, "not_bound", current, False, None)
            instance.certificate = ""
            restarted, error = self._restart(instance) if restart else (False, None)
            self.on_change()
            return ClearResult(instance.name, "unbound", current, restarted, error)

    def _restart(self, instance: SqlInstance) -> tuple[bool, str | None]:
        """Stop (if running) and start the service; a failure leaves it stopped."""
        instance.service_state = "Stopped"
        if instance.restart_fails:
            return False, (f"Service '{instance.service_name}' did not restart: Cannot start service "
                           f"{instance.service_name} on computer '.'.")
        instance.service_state = "Running"
        return True, None


def instance_not_found(instance_name: str) -> SqlError:
    """``WinCert.SqlInstanceNotFound``."""
    return SqlError(f"SQL Server instance '{instance_name}' was not found.", "WinCert.SqlInstanceNotFound",
                    "ObjectNotFound", instance_name, "System.Management.Automation.ItemNotFoundException")
