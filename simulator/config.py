"""Simulator configuration: which hosts to serve, how they authenticate, what they hold.

A config is YAML or JSON matching :class:`SimulatorConfig`. Each host gets its own loopback
port (0 = pick a free one), its own credentials and its own persisted host model under
``state_dir/<host name>``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_STORES = (
    "My", "Root", "CA", "WebHosting", "TrustedPeople", "Remote Desktop", "REQUEST", "Disallowed",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserSpec(_Model):
    """A local account the host accepts. ``domain`` None accepts the bare user name and
    ``<HOSTNAME>\\user`` (NTLM matches the domain exactly as the client sends it)."""

    username: str
    password: str
    domain: str | None = None


class SeedSpec(_Model):
    """Certificates to put into a store at start-up (only if not already persisted).

    ``path`` is a PEM (one or many certificates), DER, or PKCS#12 file, or a directory whose
    loadable files are all seeded (each certificate of a chain file separately).
    ``password`` is for PKCS#12 files.
    """

    store: str
    path: Path
    password: str | None = None
    recursive: bool = False
    key_container: str | None = Field(
        default=None,
        description="Key container name for the seeded keys (default: a GUID per certificate);"
        " tools that reuse PFX friendly names as container names give several keys one name",
    )


class IisBindingSpec(_Model):
    """One binding of an IIS site. ``binding_information`` is IIS's ``ip:port:host`` (``*`` = all
    unassigned, IPv6 in brackets, empty host = none). An https binding may name a certificate
    (thumbprint and LocalMachine store); it becomes the http.sys SSL mapping of its endpoint."""

    protocol: str = "https"
    binding_information: str
    certificate_thumbprint: str | None = None
    certificate_store_name: str = "My"
    ssl_flags: int = 0

    @field_validator("certificate_thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value) != 40 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError("certificate_thumbprint: 40 hex characters")
        return value.upper()


class SslMappingSpec(_Model):
    """An http.sys SSL certificate mapping of its own, with or without an IIS binding (an
    orphan left by a removed site, or made with ``netsh http add sslcert``). ``kind`` ``ipport``
    (``endpoint`` ``192.0.2.10:443``, ``0.0.0.0:443``, ``[::1]:443``), ``hostnameport`` (SNI,
    ``www.example.test:443``) or ``ccs`` (central certificate store, ``endpoint`` the port)."""

    kind: Literal["ipport", "hostnameport", "ccs"]
    endpoint: str
    certificate_thumbprint: str = ""
    certificate_store_name: str = "My"


class IisSiteSpec(_Model):
    """One IIS site; ``id`` None = the next free id."""

    name: str
    id: int | None = Field(default=None, ge=1)
    bindings: list[IisBindingSpec] = Field(default_factory=list)


def _default_iis_sites() -> list[IisSiteSpec]:
    return [IisSiteSpec(name="Default Web Site", id=1,
                        bindings=[IisBindingSpec(protocol="http", binding_information="*:80:")])]


class IisSpec(_Model):
    """IIS on a host (``HostConfig.iis`` None = IIS not installed)."""

    version: str = Field(default="10.0", description="IIS version, e.g. 8.5 or 10.0")
    sites: list[IisSiteSpec] = Field(default_factory=_default_iis_sites)
    ssl_mappings: list[SslMappingSpec] = Field(
        default_factory=list, description="http.sys SSL mappings beyond those of the bindings (orphans)"
    )


class SqlInstanceSpec(_Model):
    """One SQL Server instance. Defaults: ``instance_id`` ``MSSQL16.<NAME>``, service account
    ``NT Service\\MSSQLSERVER`` / ``NT Service\\MSSQL$<NAME>``; ``certificate`` is the registry
    value (thumbprint or empty, kept in the case given: Windows stores what the writer wrote);
    ``restart_fails`` makes every service start fail (tests). ``version`` is the instance's
    ``Setup\\PatchLevel`` (default a SQL Server 2022 build); ``service_sid_type`` the service's
    ``ServiceSidType`` (SQL Server setup sets 1, unrestricted)."""

    name: str = "MSSQLSERVER"
    instance_id: str | None = None
    service_account: str | None = None
    service_state: Literal["Running", "Stopped"] = "Running"
    certificate: str = ""
    restart_fails: bool = False
    version: str = "16.0.4135.4"
    service_sid_type: Literal[0, 1, 3] = 1


class ProviderSpec(_Model):
    """A cryptographic provider registered on the host: a CryptoAPI CSP or a CNG KSP
    (``Get-WinCertHostInfo``; ``Import-WinCertCertificate -ProviderName`` must name one)."""

    name: str
    kind: Literal["CSP", "KSP"]


# What a fresh Windows Server 2022 registers (certutil -csplist), CSPs then KSPs.
DEFAULT_PROVIDERS: tuple[tuple[str, Literal["CSP", "KSP"]], ...] = (
    ("Microsoft Base Cryptographic Provider v1.0", "CSP"),
    ("Microsoft Base DSS and Diffie-Hellman Cryptographic Provider", "CSP"),
    ("Microsoft Base DSS Cryptographic Provider", "CSP"),
    ("Microsoft Base Smart Card Crypto Provider", "CSP"),
    ("Microsoft DH SChannel Cryptographic Provider", "CSP"),
    ("Microsoft Enhanced Cryptographic Provider v1.0", "CSP"),
    ("Microsoft Enhanced DSS and Diffie-Hellman Cryptographic Provider", "CSP"),
    ("Microsoft Enhanced RSA and AES Cryptographic Provider", "CSP"),
    ("Microsoft RSA SChannel Cryptographic Provider", "CSP"),
    ("Microsoft Strong Cryptographic Provider", "CSP"),
    ("Microsoft Software Key Storage Provider", "KSP"),
    ("Microsoft Passport Key Storage Provider", "KSP"),
    ("Microsoft Platform Crypto Provider", "KSP"),
    ("Microsoft Smart Card Key Storage Provider", "KSP"),
)


class ClientCertificateMappingSpec(_Model):
    """A WinRM ClientCertificate mapping (``New-Item WSMan:\\localhost\\ClientCertificate
    -Subject <UPN> -Issuer <CA thumbprint> -Credential <account>``): a client certificate with
    that UPN, issued by that CA (which must be in the host's Root store), runs as ``username``."""

    subject: str = Field(min_length=1, description="The certificate's UPN, or * for any")
    issuer: str = Field(description="Thumbprint of the issuing CA certificate (in the Root store)")
    username: str = Field(min_length=1, description="The local account requests run as")

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if len(value) != 40 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError("issuer: the CA certificate's thumbprint, 40 hex characters")
        return value.upper()


class HostConfig(_Model):
    """One simulated Windows host."""

    name: str = Field(description="NetBIOS-like host name, e.g. WIN-SIM01")
    port: int = Field(default=0, ge=0, le=65535, description="0 = a free loopback port")
    address: str | None = Field(
        default=None,
        description="Listen address of this host (e.g. 127.0.0.2, so each host has its own IP);"
        " default: SimulatorConfig.bind",
    )
    transport: Literal["http", "https"] = "http"
    auth: list[Literal["negotiate", "ntlm", "kerberos", "basic", "certificate", "credssp"]] = Field(
        default_factory=lambda: ["negotiate", "ntlm"]
    )
    client_certificate_mappings: list[ClientCertificateMappingSpec] = Field(
        default_factory=list,
        description="WinRM certificate mappings ('certificate' in auth, transport https); the issuers"
        " must be in the host's Root store (seed them)",
    )
    kerberos_keytab: Path | None = Field(
        default=None,
        description="Keytab with the host's service keys (HTTP/<name>, HTTP/<name>:<port>): Negotiate"
        " then accepts Kerberos too, and 'kerberos' in auth also offers the Kerberos scheme",
    )
    users: list[UserSpec] = Field(
        default_factory=lambda: [UserSpec(username="Administrator", password=secrets.token_urlsafe(12))],
        description="Accounts; default: Administrator with a random password (see the credentials file)",
    )
    os_build: int = Field(default=20348, description="Windows build: 17763 = 2019, 20348 = 2022")
    ui_language: Literal["en-US", "de-DE"] = Field(
        default="en-US",
        description="Windows display language: the names of well-known accounts (NT AUTHORITY\\SYSTEM"
        " is NT-AUTORIT\u00c4T\\SYSTEM on de-DE, where the English name does not resolve)",
    )
    stores: list[str] = Field(default_factory=lambda: list(DEFAULT_STORES))
    seed: list[SeedSpec] = Field(default_factory=list)
    command_delay_ms: int = Field(default=0, ge=0, description="Simulated run time of each command")
    round_trip_ms: float = Field(
        default=0, ge=0, description="Injected network round-trip time: each WS-Man reply waits this long"
    )
    keepalive_timeout: float = Field(
        default=300.0, gt=0, description="Idle seconds before dropping a connection"
    )
    allow_unencrypted: bool = Field(default=False, description="Windows AllowUnencrypted (default false)")
    max_shells_per_user: int = Field(
        default=25,
        ge=0,
        description="WinRM MaxShellsPerUser (the PowerShell plugin's default 25); a Create beyond it"
        " gets fault 2150859173; 0 = unlimited",
    )
    max_concurrent_operations_per_user: int = Field(
        default=1500,
        ge=0,
        description="WinRM MaxConcurrentOperationsPerUser (default 1500): requests in flight per user"
        " beyond it get fault 2150859174; 0 = unlimited",
    )
    max_commands_per_shell: int = Field(
        default=0,
        ge=0,
        description="Commands one shell may run (MaxProcessesPerShell / commands-per-shell quota);"
        " the next Command gets fault 2150859241; 0 = unlimited",
    )
    idle_timeout_seconds: float = Field(
        default=7200.0,
        gt=0,
        description="WinRM IdleTimeout (default 7200 s): a shell without requests this long is"
        " deleted; later requests for it get fault 2150858843 (shell not found)",
    )
    providers: list[ProviderSpec] = Field(
        default_factory=lambda: [ProviderSpec(name=n, kind=k) for n, k in DEFAULT_PROVIDERS],
        description="Registered CSPs/KSPs; default: those of Windows Server 2022",
    )
    locked_key_containers: list[str] = Field(
        default_factory=list,
        description="Key containers whose deletion fails with 'Access is denied' (another"
        " account's ACL): Remove-WinCertCertificate warns and keeps the key",
    )
    iis: IisSpec | None = Field(default=None, description="IIS sites and bindings; None = not installed")
    sql_instances: list[SqlInstanceSpec] = Field(default_factory=list, description="SQL Server instances")
    jea_endpoints: list[str] = Field(
        default_factory=list,
        description="PSRP configuration names served as JEA endpoints (deploy/jea): scripts refused,"
        " only the module's functions visible; Microsoft.PowerShell stays the full endpoint",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value) or len(value) > 63:
            raise ValueError("host name: 1-63 letters, digits, '-' or '_'")
        return value

    @field_validator("jea_endpoints")
    @classmethod
    def _jea_endpoints(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
                raise ValueError(
                    f"jea_endpoints: {name!r} is not a configuration name (letters, digits, '_', '.', '-')"
                )
            if name.lower() in ("microsoft.powershell", "microsoft.powershell32"):
                raise ValueError(f"jea_endpoints: {name!r} is a built-in full endpoint")
        return value


class SimulatorConfig(_Model):
    """The whole simulator: a state directory and the hosts to serve."""

    state_dir: Path
    bind: str = Field(default="127.0.0.1", description="Loopback by default; anything else only on request")
    hosts: list[HostConfig]

    @classmethod
    def load(cls, path: Path) -> SimulatorConfig:
        """Read a YAML or JSON config file; relative paths resolve against its folder."""
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = cls.model_validate(data)
        base = path.parent
        if not config.state_dir.is_absolute():
            config.state_dir = (base / config.state_dir).resolve()
        for host in config.hosts:
            if host.kerberos_keytab is not None and not host.kerberos_keytab.is_absolute():
                host.kerberos_keytab = (base / host.kerberos_keytab).resolve()
            for seed in host.seed:
                if not seed.path.is_absolute():
                    seed.path = (base / seed.path).resolve()
        return config
